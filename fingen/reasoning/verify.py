"""Rule-based answer check (Fin-R1 round 1): numbers, yes/no, choice letters, labels, spans.

:func:`check_answer` returns a :class:`Verdict`; ``correct=None`` means the rules cannot decide
and an LLM judge is needed (free text, or a prediction naming several candidates).

Numbers are compared as sets of readings: ``9.86%`` reads as 9.86 and 0.0986; for
``answer_type="percent"`` a bare gold or prediction also reads as a percent of itself, so
0.0986, 9.86 and 9.86% all match gold 0.0986. A prediction with a scale word (``1.2 billion``)
also reads in that unit and in thousands/millions when the gold's unit is unknown; with a known
``scale`` the gold also reads as ``gold * scale``. Years (1900-2100 integers) and numeric spans
get no relative tolerance: 2018 is not 2019.

Two readings match by the ``rounding`` rule:

* ``"strict"`` (default; the RL reward's rule): within ``rel_tol`` (1 %) of the gold, or within
  half a unit of the gold's printed precision, since the gold itself may be rounded (gold
  ``12.4`` accepts 12.35..12.45, gold ``12`` accepts 11.5..12.5; this allowance is capped at
  5 % of the gold, so a one-digit gold such as ``3`` or ``0.00001`` gets +-5 %, not +-17 % or
  +-50 %).
  A prediction coarser than the gold gets no allowance: ``12`` for 12.4 and ``14%`` for
  0.14464 are wrong (3.2 % off), ``14.46%`` is right. No absolute tolerance by default.
* ``"lenient"`` (the round-1 rule): within ``abs_tol + rel_tol * |gold|`` (``abs_tol`` 1e-6),
  or when the two agree at the coarser of their written precisions and differ by at most 5 %
  (``56%`` for 0.56197, ``2.1`` for 2.14).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace

from fingen.reasoning.extract import SENTIMENT, YES_NO, LabelSet, extract_label
from fingen.reasoning.numbers import SCALES, Amount, normalize_text_numbers, parse_amounts

__all__ = [
    "ANSWER_TYPES",
    "ROUNDING_MODES",
    "Verdict",
    "check_answer",
    "infer_answer_type",
    "normalize_answer_type",
    "token_f1",
]

#: Accepted answer types and their aliases (TAT-QA's arithmetic/count are numbers).
ANSWER_TYPES: dict[str, str] = {
    "auto": "auto", "number": "number", "numeric": "number", "arithmetic": "number",
    "count": "number", "percent": "percent", "percentage": "percent", "yes_no": "yes_no",
    "yesno": "yes_no", "bool": "yes_no", "boolean": "yes_no", "choice": "choice",
    "multiple_choice": "choice", "label": "label", "classification": "label", "span": "span",
    "multi_span": "multi_span", "multi-span": "multi_span", "text": "text", "free_text": "text",
}  # fmt: skip
_DECREASE = re.compile(
    r"\b(?:decreas\w*|declin\w*|dropp?\w*|fell|fall\w*|lower|reduc\w*|down)\b"
    r"|下降|减少|下跌|降低|下滑",
    re.IGNORECASE,
)
ROUNDED_REL_CAP = 0.05  # a rounding allowance never exceeds 5 % of the gold
#: ``check_answer(rounding=...)``: strict (within rel_tol or the gold's precision) or lenient.
ROUNDING_MODES = ("strict", "lenient")
_EPS = 1e-9  # float noise: a prediction exactly at the tolerance is accepted
_LETTERS = LabelSet.of(list("ABCDEFGH"))


@dataclass(frozen=True)
class Verdict:
    """Outcome of a rule check: ``correct`` is None when only a judge can decide."""

    correct: bool | None
    method: str
    detail: str = ""


@dataclass(frozen=True)
class _Reading:
    value: float
    decimals: int


def normalize_answer_type(answer_type: str | None) -> str:
    """Canonical answer type; raises ValueError naming the allowed values."""
    key = (answer_type or "auto").strip().lower()
    if key not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; allowed: {sorted(ANSWER_TYPES)}")
    return ANSWER_TYPES[key]


def _sole_amount(text: str) -> Amount | None:
    """The amount when ``text`` is essentially one number ("$1,234 million", "-9.86%")."""
    amounts = parse_amounts(text)
    if len(amounts) != 1:
        return None
    rest = normalize_text_numbers(text).replace(amounts[0].text, " ", 1)
    rest = re.sub(
        r"(?i)\b(?:approximately|approx|about|around|roughly|usd|rmb|dollars?)\b", "", rest
    )
    return amounts[0] if not re.search(r"[A-Za-z\u4e00-\u9fff]", rest) else None


def _readings(
    a: Amount, *, bare_percent: bool, mantissa: bool, units: bool, scale: float | None = None
) -> list[_Reading]:
    """The values an amount may stand for (see the module doc)."""
    base = [_Reading(a.value, a.decimals - round(math.log10(a.scale)))]
    if mantissa and a.scale_word:
        base.append(_Reading(a.mantissa, a.decimals))
    if units and a.scale_word:
        base += [
            _Reading(a.value / u, a.decimals - round(math.log10(a.scale / u)))
            for u in (1e3, 1e6, 1e9)
            if u < a.scale
        ]
    if scale:
        base.append(_Reading(a.value * scale, a.decimals - round(math.log10(scale))))
    out = list(base)
    if a.percent or bare_percent:
        out += [_Reading(r.value / 100, r.decimals + 2) for r in base]
    return out


def _year_like(a: Amount) -> bool:
    return a.decimals == 0 and a.scale_word is None and not a.percent and 1900 <= a.value <= 2100


def _match_lenient(p: _Reading, g: _Reading, rel_tol: float, abs_tol: float) -> str | None:
    diff = abs(p.value - g.value)
    if diff <= abs_tol + rel_tol * abs(g.value):
        return "tolerance"
    coarse = 0.5 * 10 ** -min(p.decimals, g.decimals) * (1 + _EPS)
    if diff <= coarse and diff <= ROUNDED_REL_CAP * abs(g.value):
        return "rounding"
    return None


def _match_strict(p: _Reading, g: _Reading, rel_tol: float, abs_tol: float) -> str | None:
    diff = abs(p.value - g.value)
    if diff <= abs_tol + rel_tol * abs(g.value) * (1 + _EPS):
        return "tolerance"
    half_unit = 0.5 * 10**-g.decimals * (1 + _EPS)  # the gold's own precision, not the pred's
    if diff <= half_unit and diff <= ROUNDED_REL_CAP * abs(g.value) * (1 + _EPS):
        return "gold_precision"
    return None


_MATCHERS = {"strict": _match_strict, "lenient": _match_lenient}


def _check_number(
    predicted: str,
    gold: Amount,
    answer_type: str,
    scale: str | None,
    rel_tol: float,
    abs_tol: float,
    rounding: str,
) -> Verdict:
    match = _MATCHERS[rounding]
    if "=" in predicted and parse_amounts(predicted.rsplit("=", 1)[1]):
        predicted = predicted.rsplit("=", 1)[1]  # "5829 - 5735 = 94" -> "94"
    preds = parse_amounts(predicted)
    if not preds:
        return Verdict(False, "number", "no number in the prediction")
    scale_key = (scale or "").strip().lower()
    gold_percent = gold.percent or scale_key in ("percent", "%")
    factor = SCALES.get(scale_key)
    unit_free = factor is None and gold.scale_word is None
    percent_mode = answer_type == "percent" and not gold_percent
    gold_r = _readings(
        replace(gold, percent=gold_percent),
        bare_percent=percent_mode,
        mantissa=True,
        units=False,
        scale=factor,
    )

    def first_hits(amounts: list[Amount]) -> list[tuple[int, str, str]]:
        hits = []
        for idx, p in enumerate(amounts):
            readings = _readings(p, bare_percent=percent_mode, mantissa=unit_free, units=unit_free)
            for pr in readings:
                how = next((h for g in gold_r if (h := match(pr, g, rel_tol, abs_tol))), None)
                if how:
                    hits.append((idx, how, p.text))
                    break
        return hits

    hits = first_hits(preds)
    if _DECREASE.search(predicted) and preds[0].value > 0:  # "a decrease of 5.3%" is -5.3%
        flipped = replace(preds[0], value=-preds[0].value, mantissa=-preds[0].mantissa)
        neg = first_hits([flipped])
        if neg:
            return Verdict(
                True,
                f"number:{neg[0][1]}+sign_word",
                f"{preds[0].text!r} read as negative ~ {gold.text!r}",
            )
        if hits and hits[0][0] == 0:
            return Verdict(None, "number:sign_word", "a decrease word but the gold is positive")
    other_years = [p for p in preds[1:] if _year_like(p) and p.value != gold.value]
    if hits and hits[0][0] == 0 and _year_like(gold) and other_years:
        return Verdict(None, "number:ambiguous", f"several years: {other_years[0].text!r}")
    if hits and hits[0][0] == 0:
        return Verdict(True, f"number:{hits[0][1]}", f"{hits[0][2]!r} ~ {gold.text!r}")
    if hits:
        return Verdict(None, "number:ambiguous", f"{hits[0][2]!r} matches but is not the first")
    return Verdict(False, "number", f"{preds[0].text!r} != {gold.text!r}")


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]|_", " ", text)
    text = re.sub(r"\b(?:a|an|the)\b", " ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\u4e00-\u9fff]|[^\s\u4e00-\u9fff]+", _norm(text))


def token_f1(predicted: str, gold: str) -> float:
    """SQuAD-style token F1 (CJK characters are single tokens)."""
    p, g = _tokens(predicted), _tokens(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def _check_span(
    predicted: str, gold: str, extractive: bool, accept: float, reject: float
) -> Verdict:
    if _norm(predicted) == _norm(gold):
        return Verdict(True, "text:exact")
    f1 = token_f1(predicted, gold)
    if extractive and f1 >= accept:
        return Verdict(True, "text:f1", f"f1={f1:.2f}")
    contained = _norm(gold) in _norm(predicted)
    if extractive and f1 <= reject and not contained:
        return Verdict(False, "text:f1", f"f1={f1:.2f}")
    return Verdict(None, "text:undecided", f"f1={f1:.2f}")


_CONNECTORS = {"and", "or", "both", "as", "well", "和", "及", "以", "与"}


def _check_multi_span(predicted: str, gold: str, reject: float) -> Verdict:
    """Each gold item (split on ";"/newlines) must appear in the prediction, and nothing else."""
    golds = [g for g in (_norm(x) for x in re.split(r"[;\n]", gold)) if g]
    text = f" {_norm(predicted)} "
    found = [g for g in golds if f" {g} " in text]
    for g in sorted(found, key=len, reverse=True):
        text = text.replace(f" {g} ", " ", 1)
    extra = [t for t in text.split() if t not in _CONNECTORS]
    if len(found) == len(golds) and not extra:
        return Verdict(True, "multi_span", f"{len(found)}/{len(golds)} items")
    if not found and token_f1(predicted, gold) <= reject:
        return Verdict(False, "multi_span", f"0/{len(golds)} items")
    return Verdict(
        None, "multi_span", f"{len(found)}/{len(golds)} items, {len(extra)} extra tokens"
    )


def _check_labels(predicted: str, gold: str, labelset: LabelSet, method: str) -> Verdict | None:
    gold_label = extract_label(gold, labelset)
    if gold_label is None:
        return None
    pred_label = extract_label(predicted, labelset)
    if pred_label is None:
        return Verdict(None, method, "no single label in the prediction")
    return Verdict(pred_label == gold_label, method, f"{pred_label!r} vs {gold_label!r}")


def _check_choice(predicted: str, gold: str, labelset: LabelSet | None) -> Verdict | None:
    letters = re.sub(r"[\s,、;()]|and|和", "", predicted.strip().rstrip("."))
    if re.fullmatch(r"[A-H]{2,}", gold.strip()) and re.fullmatch(r"[A-H]+", letters):
        same = sorted(set(letters)) == sorted(set(gold.strip()))
        return Verdict(same, "choice", f"{letters!r} vs {gold.strip()!r}")
    return _check_labels(predicted, gold, labelset or _LETTERS, "choice")


def infer_answer_type(gold: str) -> str:
    """number, choice, yes_no or text, judged from the gold answer alone."""
    if _sole_amount(gold):
        return "number"
    if re.fullmatch(r"\(?[A-H]\)?\.?", gold.strip()):
        return "choice"
    if extract_label(gold, YES_NO) and len(gold.split()) <= 2:
        return "yes_no"
    return "text"


def check_answer(
    predicted: str | None,
    gold: str,
    answer_type: str = "auto",
    *,
    rel_tol: float = 1e-2,
    abs_tol: float | None = None,
    rounding: str = "strict",
    scale: str | None = None,
    labelset: LabelSet | None = None,
    f1_accept: float = 0.8,
    f1_reject: float = 0.2,
) -> Verdict:
    """Check a predicted answer against the gold by rules.

    Args:
        predicted: the extracted answer (see ``extract_answer``); None/empty is wrong.
        gold: the gold answer text.
        answer_type: number | percent | yes_no | choice | label | span | multi_span | text |
            auto (inferred from the gold); aliases in ``ANSWER_TYPES``.
        rel_tol: relative numeric tolerance (1 %).
        abs_tol: absolute numeric tolerance; None: 0 when strict, 1e-6 when lenient.
        rounding: ``"strict"`` (within ``rel_tol`` or half a unit of the gold's printed
            precision) or ``"lenient"`` (also a prediction that agrees with the gold at its own
            coarser precision, up to 5 % off); see the module doc.
        scale: the gold's unit (TAT-QA ``scale``: thousand, million, billion, percent, 万, 亿).
        labelset: labels for ``label``/``choice`` (default: sentiment or letters A-H).
        f1_accept, f1_reject: token-F1 bounds deciding spans; between them -> None.

    Returns:
        Verdict(correct, method, detail); correct None means "ask a judge".

    Raises:
        ValueError: unknown ``answer_type`` or ``rounding``.
    """
    kind = normalize_answer_type(answer_type)
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {list(ROUNDING_MODES)}")
    if abs_tol is None:
        abs_tol = 1e-6 if rounding == "lenient" else 0.0
    if predicted is None or not str(predicted).strip():
        return Verdict(False, "empty", "no answer extracted")
    predicted, gold = str(predicted).strip(), str(gold).strip()
    gold_amount = _sole_amount(gold)
    if kind == "auto" or (kind in ("number", "percent") and gold_amount is None):
        kind = infer_answer_type(gold)
    if kind in ("yes_no", "choice", "label"):
        if kind == "yes_no":
            verdict = _check_labels(predicted, gold, YES_NO, "yes_no")
        elif kind == "choice":
            verdict = _check_choice(predicted, gold, labelset)
        else:
            verdict = _check_labels(predicted, gold, labelset or SENTIMENT, "label")
        if verdict is not None:
            return verdict
        if _norm(predicted) == _norm(gold):
            return Verdict(True, "text:exact")
        short = len(_tokens(predicted)) <= 3
        return Verdict(False if short else None, "label:text", "gold not in the label set")
    if gold_amount is not None and kind in ("number", "percent", "span", "text"):
        if _year_like(gold_amount) or kind == "span":  # 2019 is not 2018; spans are copied
            rel_tol = 0.0
        return _check_number(predicted, gold_amount, kind, scale, rel_tol, abs_tol, rounding)
    if kind == "multi_span":
        return _check_multi_span(predicted, gold, f1_reject)
    return _check_span(predicted, gold, kind == "span", f1_accept, f1_reject)
