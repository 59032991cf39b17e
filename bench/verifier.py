"""The rule-based answer check on real golds, strict vs lenient (prints a markdown table).

For every FinQA dev item (``../shared/data/finqa_dev200/dev_200.json``) and every TAT-QA dev
arithmetic item (``../shared/data/tatqa/tatqa_dataset_dev.json``, with its ``scale``) the
script writes predictions whose value it knows, sorts them into classes by that value alone
(not by asking the checker) and counts what ``check_answer`` says in each ``rounding`` mode:

exact
    the gold's value at its full precision in other formats: thousands separators, ``$``,
    percent sign, a ratio as a bare percent, scale words (``million``/``billion``/the item's
    unit), the full amount in units, trailing zeros, parentheses or "a decrease of" for
    negatives, "The answer is ...", "approximately". Must be accepted.
rounded <=1%
    the gold rounded to fewer decimals (or to an integer), in any of those formats, landing
    within 1 % of it (``56%`` for 0.56197). Must be accepted.
coarse <=5% / coarse >5%
    the same roundings when they move the value by more than 1 % and by more than half a unit
    of the gold's printed precision (``14%`` for 0.14464, ``12`` for 12.4; ``1`` for 0.56197
    is >5%). Must be rejected in strict mode; round 1's lenient mode accepted those up to 5 %
    off.
perturbed
    ×1.05, ×0.95, ×1.1, ×10, ÷10, a sign flip, ±1 in the last shown digit of the gold or of a
    rounded form, the amount with the wrong scale word (TAT-QA), the other yes/no, each kept
    only when it is more than 1 % and more than half a unit of the gold's precision away.
    Must be rejected.

"Within half a unit of the gold's printed precision" is capped at 5 % of the gold, as in
``check_answer``. "?" counts verdicts the rules left to the judge (``correct=None``).
Usage: ``python bench/verifier.py [--data ../shared/data] [--examples 5]``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fingen.reasoning.numbers import format_number  # noqa: E402
from fingen.reasoning.sources import load_finqa, load_tatqa  # noqa: E402
from fingen.reasoning.verify import ROUNDING_MODES, check_answer  # noqa: E402
from fingen.records import QAItem  # noqa: E402

__all__ = ["CLASSES", "finqa_variants", "main", "tatqa_variants"]

CLASSES = {  # class -> the verdict it must get in strict mode
    "exact": True,
    "rounded <=1%": True,
    "coarse <=5%": False,
    "coarse >5%": False,
    "perturbed": False,
}
REL_TOL, CAP, EPS = 0.01, 0.05, 1e-9
FACTORS = {"thousand": 1e3, "million": 1e6, "billion": 1e9}
WRONG_SCALE = {"thousand": "million", "million": "billion", "billion": "thousand"}

Variant = tuple[str, str]  # (class, prediction text)


def _decimals(text: str) -> int:
    return len(text.strip().lstrip("-").partition(".")[2])


def _near(v: float, g: float, gold_decimals: int) -> bool:
    """Within the strict rule: 1 % of the gold, or half a unit of its printed precision
    (at most 5 % of the gold)."""
    diff = abs(v - g)
    if diff <= REL_TOL * abs(g) * (1 + EPS):
        return True
    return diff <= 0.5 * 10**-gold_decimals * (1 + EPS) and diff <= CAP * abs(g) * (1 + EPS)


def _same(v: float, g: float) -> bool:
    return abs(v - g) <= 1e-9 * abs(g) or v == g


def _classify_rounded(v: float, g: float, gold_decimals: int) -> str:
    if _near(v, g, gold_decimals):
        return "rounded <=1%"
    return "coarse <=5%" if abs(v - g) <= CAP * abs(g) else "coarse >5%"


def _fixed(v: float, k: int, comma: bool = False) -> str:
    text = f"{v:,.{max(k, 0)}f}" if comma else f"{v:.{max(k, 0)}f}"
    return "0" if text.strip("-0.,") == "" and not text.startswith("0") else text


def _shown(text: str) -> float:
    """The value a rendered number stands for (in the units it was written in)."""
    return float(text.replace(",", "").replace("$", ""))


class _Forms:
    """Renderers of a value (in the gold's units) at k decimals of the rendered number.

    Each form: name -> (render(x, k) -> (number, text), unit): the written number ``x`` is the
    value divided by ``unit`` (0.01 for a percent of a ratio, 1e3 for billions of millions)."""

    def __init__(self, forms: dict[str, tuple]) -> None:
        self.forms = forms

    def render(self, name: str, v: float, k: int) -> tuple[str, float]:
        """(text, the value in gold units that text stands for)."""
        fn, unit = self.forms[name]
        number = fn(v / unit, k)
        return number[1], _shown(number[0]) * unit

    def shift(self, name: str) -> int:
        """Decimals the written number needs beyond the gold's (-2 for a ratio in percent)."""
        return round(math.log10(self.forms[name][1]))


def _signed(prefix: str, number: str, suffix: str = "") -> str:
    if number.startswith("-"):
        return f"-{prefix}{number[1:]}{suffix}"
    return f"{prefix}{number}{suffix}"


def _finqa_forms(g: float, answer_type: str) -> _Forms:
    def plain(x, k):
        return _fixed(x, k), _fixed(x, k)

    def comma(x, k):
        return _fixed(x, k), _fixed(x, k, comma=True)

    def dollar(x, k):
        return _fixed(x, k), _signed("$", _fixed(x, k, comma=True))

    def pct(x, k):
        return _fixed(x, k), _fixed(x, k) + "%"

    def million(x, k):
        return _fixed(x, k), _fixed(x, k, comma=True) + " million"

    def billion(x, k):
        return _fixed(x, k), _fixed(x, k) + " billion"

    def sentence(x, k):
        return _fixed(x, k), f"The answer is {_fixed(x, k, comma=True)}."

    def approx(x, k):
        return _fixed(x, k), f"approximately {_fixed(x, k)}"

    forms = {
        "plain": (plain, 1.0),
        "comma": (comma, 1.0),
        "dollar": (dollar, 1.0),
        "pct": (pct, 0.01),
        "sentence": (sentence, 1.0),
        "approx": (approx, 1.0),
    }
    if abs(g) >= 1:
        forms["million"] = (million, 1.0)  # FinQA amounts are mostly in millions
        forms["billion"] = (billion, 1e3)  # read in millions when the unit is unknown
    if answer_type == "percent":
        forms["bare_pct"] = (plain, 0.01)
    return _Forms(forms)


def _variants(
    g: float, gold_decimals: int, forms: _Forms, negative_forms: list[str]
) -> Iterator[Variant]:
    """exact, rounded and coarse renderings of ``g`` plus perturbations, by class."""
    seen: set[str] = set()

    def emit(cls: str, text: str) -> Iterator[Variant]:
        if text not in seen:
            seen.add(text)
            yield cls, text

    rounded_values: list[tuple[str, int, float]] = []
    for name in forms.forms:
        full = gold_decimals + forms.shift(name)
        for k in sorted({max(full, 0), max(full, 0) + 2}):
            text, v = forms.render(name, g, k)
            if _same(v, g):  # the same value, other digits
                yield from emit("exact", text)
        for k in range(0, max(full, 0)):
            text, v = forms.render(name, g, k)
            if not _same(v, g):
                yield from emit(_classify_rounded(v, g, gold_decimals), text)
            rounded_values.append((name, k, v))
    if g < 0:
        number = format_number(-g, max_decimals=max(gold_decimals, 0))
        for template in negative_forms:
            yield from emit("exact", template.format(number))
    if g == 0:
        for text in ("1", "-1", "0.5", "1%"):
            yield from emit("perturbed", text)
        return
    candidates: list[tuple[str, int, float]] = []
    plain_like = [name for name in ("plain", "pct") if name in forms.forms]
    for factor in (1.05, 0.95, 1.1, 10.0, 0.1, -1.0):
        for name in plain_like:
            k = max(gold_decimals + forms.shift(name), 0) + (1 if factor != -1 else 0)
            candidates.append((name, k, g * factor))
    full_plain = max(gold_decimals, 0)
    step = 10.0**-full_plain
    candidates += [("plain", full_plain, g + step), ("plain", full_plain, g - step)]
    for name, k, v in rounded_values:  # off by one in the last digit of a rounded form
        if name in plain_like:
            unit = forms.forms[name][1]
            candidates += [(name, k, v + 10.0**-k * unit), (name, k, v - 10.0**-k * unit)]
    for name, k, v in candidates:
        text, shown = forms.render(name, v, k)
        # a number may also read as a percent of itself ("1" is 1 % = 0.01, "5%" is 5):
        # a perturbation must be off under every reading
        readings = (shown, shown * 100, shown / 100)
        if not any(_near(r, g, gold_decimals) for r in readings):
            yield from emit("perturbed", text)


def finqa_variants(item: QAItem) -> Iterator[Variant]:
    """Predictions for one FinQA item, by class."""
    gold = item.gold_answer
    if item.answer_type == "yes_no":
        yield from [("exact", gold.capitalize() + "."), ("exact", {"yes": "是", "no": "否"}[gold])]
        yield "perturbed", {"yes": "no", "no": "yes"}[gold]
        return
    g = float(gold)
    forms = _finqa_forms(g, item.answer_type)
    yield from _variants(g, _decimals(gold), forms, ["({})", "a decrease of {}"])


def _tatqa_forms(scale: str) -> _Forms:
    def plain(x, k):
        return _fixed(x, k), _fixed(x, k)

    def comma(x, k):
        return _fixed(x, k), _fixed(x, k, comma=True)

    forms: dict[str, tuple] = {"plain": (plain, 1.0), "comma": (comma, 1.0)}
    if scale == "percent":

        def pct(x, k):
            return _fixed(x, k), _fixed(x, k) + "%"

        forms["pct"] = (pct, 1.0)
        forms["fraction"] = (plain, 100.0)
    elif scale in FACTORS:
        factor = FACTORS[scale]

        def worded(x, k):
            return _fixed(x, k), f"{_fixed(x, k, comma=True)} {scale}"

        def units(x, k):
            return _fixed(x, k), _signed("$", _fixed(x, k, comma=True))

        def millions(x, k):
            return _fixed(x, k), _fixed(x, k) + " million"

        forms["worded"] = (worded, 1.0)
        forms["units"] = (units, 1 / factor)
        if scale != "million":
            forms["millions"] = (millions, 1e6 / factor)
    return _Forms(forms)


def tatqa_variants(item: QAItem) -> Iterator[Variant]:
    """Predictions for one TAT-QA arithmetic item (gold in its ``scale``), by class."""
    gold, scale = item.gold_answer, item.meta.get("scale") or ""
    g = float(gold)
    variants = [("exact", item.meta["answer_with_scale"])]
    variants += _variants(g, _decimals(gold), _tatqa_forms(scale), ["({})"])
    if scale in WRONG_SCALE and g:
        variants.append(("perturbed", f"{gold} {WRONG_SCALE[scale]}"))
    seen: set[str] = set()
    for cls, text in variants:
        if text not in seen:
            seen.add(text)
            yield cls, text


def _datasets(data: Path) -> dict[str, list[tuple[QAItem, list[Variant]]]]:
    finqa = [i for i in load_finqa(data / "finqa_dev200" / "dev_200.json") if isinstance(i, QAItem)]
    tatqa = [
        i
        for i in load_tatqa(data / "tatqa" / "tatqa_dataset_dev.json")
        if isinstance(i, QAItem) and i.meta.get("tatqa_answer_type") == "arithmetic"
    ]
    return {
        f"FinQA dev ({len(finqa)} items)": [(i, list(finqa_variants(i))) for i in finqa],
        f"TAT-QA dev arithmetic ({len(tatqa)})": [(i, list(tatqa_variants(i))) for i in tatqa],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--examples", type=int, default=3, help="misses shown per row and mode")
    args = parser.parse_args(argv)

    counts: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    misses: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for name, rows in _datasets(args.data).items():
        for item, variants in rows:
            scale = item.meta.get("scale") or None
            for cls, pred in variants:
                for mode in ROUNDING_MODES:
                    v = check_answer(pred, item.gold_answer, item.answer_type, scale=scale,
                                     rounding=mode)  # fmt: skip
                    counts[name, cls, mode][v.correct] += 1
                    lenient_differs = mode == "lenient" and cls.startswith("coarse")
                    if v.correct is not CLASSES[cls] and not lenient_differs:
                        misses[name, cls, mode].append(
                            f"{pred!r} for {item.gold_answer!r} ({item.answer_type}"
                            f"{', ' + scale if scale else ''}): {v.correct}"
                        )
    print("| data | class | strict must | n | strict ok | strict wrong | strict ? "
          "| lenient accepted | lenient rejected | lenient ? |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    names = dict.fromkeys(name for name, _, _ in counts)
    for name in names:
        for cls, want in CLASSES.items():
            s, lenient = counts[name, cls, "strict"], counts[name, cls, "lenient"]
            n = sum(s.values())
            if not n:
                continue
            ok, wrong = s[want], s[not want]
            print(f"| {name} | {cls} | {'accept' if want else 'reject'} | {n} | {ok} | {wrong} "
                  f"| {s[None]} | {lenient[True]} | {lenient[False]} | {lenient[None]} |")  # fmt: skip
    if args.examples:
        for mode in ROUNDING_MODES:
            shown = [(key, found) for key, found in misses.items() if key[2] == mode and found]
            if shown:
                print(f"\n{mode.capitalize()}-mode misses (first {args.examples} per row):")
            for (name, cls, _), found in shown:
                for line in found[: args.examples]:
                    print(f"- {name} / {cls}: {line}")


if __name__ == "__main__":
    main()
