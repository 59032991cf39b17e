"""Read the final answer out of a model output, and labels out of classification outputs.

Answer priority: ``\\boxed{...}`` (last, nested braces handled; searched inside ``<answer>`` first),
the ``<answer>...</answer>`` body, "final answer: ..." / "the answer is ..." / "答案是 ...",
then (optionally) the last number. :func:`extract_label` maps an output to one label of a
:class:`LabelSet` (synonyms, Chinese labels, yes/no, choice letters) or None when unclear, so
an unparseable output can be dropped ("LLMs Meet Finance").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from fingen.reasoning.numbers import normalize_text_numbers, parse_amounts

__all__ = [
    "CHOICES",
    "SENTIMENT",
    "YES_NO",
    "LabelSet",
    "ReasoningSplit",
    "clean_latex",
    "extract_answer",
    "extract_boxed",
    "extract_label",
    "split_reasoning",
]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_PHRASES = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|was|would\s+be|:|：|=)\s*[:：]?\s*(?P<en>[^\n]+)"
    r"|(?:最终答案|答案|结论)\s*(?:是|为|应为|:|：)\s*[:：]?\s*(?P<zh>[^\n]+)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|。|;")
_LATEX = [
    (re.compile(r"\\(?:text|mathrm|textbf|mathbf|operatorname)\s*\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}"), r"\1/\2"),
    (re.compile(r"\{,\}|\\,(?=\d)"), ","),
    (re.compile(r"\\[,;!: ]|\\left|\\right"), ""),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\\$"), "$"),
    (re.compile(r"\\times"), "x"),
]


def clean_latex(text: str) -> str:
    """Undo the LaTeX models put in answers: ``\\text{}``, ``\\%``, ``\\$``, ``1{,}234``, ``$..$``."""
    for pattern, repl in _LATEX:
        text = pattern.sub(repl, text)
    text = text.strip()
    if len(text) > 1 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text.replace("{", "").replace("}", "").strip()


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces balanced), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1].strip()
    return None


def _phrase_answer(text: str) -> tuple[int, str] | None:
    matches = list(_PHRASES.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    body = m.group("en") if m.group("en") is not None else m.group("zh")
    end = _SENTENCE_END.search(body)
    body = body[: end.start()] if end and end.start() > 0 else body
    return m.start(), body.strip().strip("*").strip()


def _last_number(text: str) -> str | None:
    amounts = parse_amounts(text)
    return amounts[-1].text if amounts else None


def extract_answer(text: str, *, fallback_number: bool = True) -> str | None:
    """The final answer in a model output, or None.

    Order: ``\\boxed{}`` inside the last ``<answer>``, that ``<answer>`` body, the last
    ``\\boxed{}`` anywhere, the last "final answer:/the answer is/答案是" phrase, then the last
    number when ``fallback_number``.

    >>> extract_answer("<think>5829-5735=94</think>\\n<answer>\\\\boxed{94}</answer>")
    '94'
    """
    if not text:
        return None
    tags = _ANSWER_TAG.findall(text)
    if tags and tags[-1].strip():
        body = tags[-1].strip()
        boxed = extract_boxed(body)
        return clean_latex(boxed if boxed is not None else body)
    boxed = extract_boxed(text)
    if boxed is not None:
        return clean_latex(boxed)
    phrase = _phrase_answer(text)
    if phrase and phrase[1]:
        return clean_latex(phrase[1])
    return _last_number(text) if fallback_number else None


class ReasoningSplit(NamedTuple):
    """A model output cut into its reasoning, its answer section and the extracted answer."""

    reasoning: str
    answer_text: str
    answer: str | None


def split_reasoning(text: str) -> ReasoningSplit:
    """Split ``<think>r</think><answer>a</answer>`` (or an untagged output) into its parts.

    Untagged outputs: the answer section starts at the line holding the last ``\\boxed{}`` or
    answer phrase; everything before is reasoning. Without any marker, all text is reasoning.
    """
    text = text or ""
    lowered = text.lower()
    if "</think>" in lowered:
        cut = lowered.rfind("</think>")
        reasoning, rest = text[:cut], text[cut + len("</think>") :]
    elif "<answer>" in lowered:
        cut = lowered.rfind("<answer>")
        reasoning, rest = text[:cut], text[cut:]
    else:
        marks = [m.start() for m in _BOXED.finditer(text)]
        phrase = _phrase_answer(text)
        pos = marks[-1] if marks else (phrase[0] if phrase else None)
        if pos is None:
            return ReasoningSplit(text.strip(), "", extract_answer(text, fallback_number=False))
        line_start = text.rfind("\n", 0, pos) + 1
        reasoning, rest = text[:line_start], text[line_start:]
    reasoning = re.sub(r"^\s*<think>", "", reasoning, flags=re.IGNORECASE).strip()
    answer_text = re.sub(r"</?answer>", "", rest, flags=re.IGNORECASE).strip()
    answer = extract_answer(rest, fallback_number=False) if rest.strip() else None
    return ReasoningSplit(reasoning, answer_text, answer)


@dataclass(frozen=True)
class LabelSet:
    """Labels of one task with their surface forms (case-insensitive; CJK matched as substrings).

    ``synonyms`` maps a label to extra surface forms. Single upper-case letters (choice labels)
    are matched case-sensitively as standalone letters: ``B``, ``(B)``, ``B.``, ``option B``, ``选B``.
    """

    labels: tuple[str, ...]
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.synonyms) - set(self.labels)
        if not self.labels or unknown:
            raise ValueError(f"LabelSet needs labels; synonyms for unknown labels: {unknown}")

    @classmethod
    def of(
        cls, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None
    ) -> LabelSet:
        """Build from lists: ``LabelSet.of(["up", "down"], {"up": ["涨"]})``."""
        syn = {k: tuple(v) for k, v in (synonyms or {}).items()}
        return cls(tuple(labels), syn)

    def forms(self) -> list[tuple[str, str]]:
        """(surface form, label) pairs, longest first so 不是 wins over 是."""
        pairs = [(label, label) for label in self.labels]
        pairs += [(s, label) for label, forms in self.synonyms.items() for s in forms]
        return sorted(set(pairs), key=lambda p: len(p[0]), reverse=True)


SENTIMENT = LabelSet.of(
    ["positive", "negative", "neutral"],
    {
        "positive": ["积极", "正面", "利好", "乐观", "bullish"],
        "negative": ["消极", "负面", "利空", "悲观", "bearish"],
        "neutral": ["中性", "中立"],
    },
)
YES_NO = LabelSet.of(
    ["yes", "no"],
    {"yes": ["true", "是", "是的", "对", "正确"],
     "no": ["false", "否", "不是", "不对", "错误", "不正确"]},
)  # fmt: skip
CHOICES = LabelSet.of(["A", "B", "C", "D"])


_ALTERNATIVE = re.compile(r"[\s,/、()]*(?:or|and|vs\.?|或|或者|和|还是)?[\s,/、()]*", re.IGNORECASE)


def _form_pattern(form: str) -> str:
    if form == "A":  # not the article: "A company ..."
        return r"(?<![A-Za-z])A(?![A-Za-z]|\s+(?!(?:is|was|and|or|seems|should)\b)[a-z])"
    if len(form) == 1 and form.isascii() and form.isupper():
        return rf"(?<![A-Za-z]){form}(?![A-Za-z])"
    if form.isascii():
        return rf"(?<![A-Za-z]){re.escape(form)}(?![A-Za-z])"
    return re.escape(form)


def _mentions(text: str, labelset: LabelSet) -> list[tuple[int, int, str]]:
    forms = labelset.forms()
    lower = [(f, lab) for f, lab in forms if not (len(f) == 1 and f.isupper())]
    letters = [(f, lab) for f, lab in forms if len(f) == 1 and f.isupper()]
    found: list[tuple[int, int, str]] = []
    if lower:
        by_form = {f.lower(): lab for f, lab in lower}
        pattern = re.compile("|".join(_form_pattern(f) for f, _ in lower), re.IGNORECASE)
        found += [(m.start(), m.end(), by_form[m.group(0).lower()]) for m in pattern.finditer(text)]
    if letters:
        by_form = dict(letters)
        pattern = re.compile("|".join(_form_pattern(f) for f, _ in letters))
        found += [(m.start(), m.end(), by_form[m.group(0)]) for m in pattern.finditer(text)]
    return sorted(found)


def _decide(text: str, labelset: LabelSet) -> str | None:
    mentions = _mentions(text, labelset)
    if not mentions:
        return None
    head = re.sub(r"^[\s*_`'\"(\[{:：-]*(?:option|choice|选项|选)?\s*", "", text, flags=re.I)
    offset = len(text) - len(head)
    first = mentions[0]
    if first[0] == offset:  # the text starts with a label: "Yes, because ..."
        nxt = mentions[1] if len(mentions) > 1 else None
        gap = text[first[1] : nxt[0]] if nxt else ""
        if not (nxt and nxt[2] != first[2] and _ALTERNATIVE.fullmatch(gap)):  # not "A or B"
            return first[2]
    labels = {label for _, _, label in mentions}
    return labels.pop() if len(labels) == 1 else None


def extract_label(text: str, labelset: LabelSet) -> str | None:
    """The label an output gives, or None when it names none or several.

    The final answer (boxed, ``<answer>``, "the answer is") is searched first; else the whole
    text must start with a label or mention exactly one.

    >>> extract_label("<think>利润大增</think><answer>积极</answer>", SENTIMENT)
    'positive'
    """
    if not text:
        return None
    text = normalize_text_numbers(text)
    answer = extract_answer(text, fallback_number=False)
    if answer:
        label = _decide(answer, labelset)
        if label is not None:
            return label
    body = split_reasoning(text).answer_text or text
    return _decide(body, labelset) or (_decide(text, labelset) if body != text else None)
