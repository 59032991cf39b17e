"""Rule-based answer check: every FinQA dev gold in many formats, TAT-QA arithmetic with scale.

The default numeric rule is strict (see tests/test_verify_strict.py); the round-1 lenient rule,
which also accepts a prediction rounded to its own coarser precision, stays behind
``rounding="lenient"``.
"""

from __future__ import annotations

import pytest

from fingen.reasoning.numbers import format_number, parse_amounts
from fingen.reasoning.sources import load_finqa, load_tatqa
from fingen.reasoning.verify import check_answer, normalize_answer_type, token_f1


@pytest.mark.parametrize(
    ("predicted", "gold", "answer_type", "scale"),
    [
        ("9.86%", "0.0986", "percent", None),
        ("9.86", "0.0986", "percent", None),
        ("9.86%", "0.0986", "number", None),
        ("$1,234 million", "1234", "number", None),
        ("1.2 billion", "1200", "number", "million"),
        ("1,200,000", "1.2", "number", "million"),
        ("(1,234)", "-1234", "number", None),
        ("\u22121,234", "-1234", "number", None),
        ("USD 5.2 bn", "5200", "number", "million"),
        ("RMB 3.5亿元", "350000000", "number", None),
        ("1.2万", "12000", "auto", None),
        ("12 千", "12000", "number", None),
        ("-0.2222", "-22.22", "percent", "percent"),
        ("-22.22%", "-22.22", "percent", "percent"),
        ("2.9%", "0.0289", "percent", None),
        ("2.14", "2.1", "number", None),  # within half a unit of the gold's precision
        ("5829 - 5735 = 94", "94", "number", None),
        ("50 bps", "0.005", "percent", None),
        ("１２.５％", "0.125", "percent", None),
    ],
)
def test_equivalent_numbers_are_accepted(predicted, gold, answer_type, scale) -> None:
    verdict = check_answer(predicted, gold, answer_type, scale=scale)
    assert verdict.correct is True, verdict


def test_lenient_mode_accepts_a_prediction_rounded_to_its_own_precision() -> None:
    assert check_answer("3%", "0.0289", "percent").correct is False  # 3.8 % off
    assert check_answer("3%", "0.0289", "percent", rounding="lenient").correct is True
    assert check_answer("56%", "0.56197", "percent", rounding="lenient").correct is True
    assert check_answer("7%", "0.0389", "percent", rounding="lenient").correct is False


@pytest.mark.parametrize(
    ("predicted", "gold", "answer_type", "scale"),
    [
        ("98.6", "0.0986", "percent", None),
        ("0.986", "0.0986", "percent", None),
        ("1.2 million", "1200", "number", "million"),
        ("-2222", "-22.22", "percent", "percent"),
        ("0%", "0.00455", "percent", None),
        ("2018", "2019", "span", None),
        ("1,234", "-1234", "number", None),
        ("no number here", "5", "number", None),
    ],
)
def test_wrong_numbers_are_rejected(predicted, gold, answer_type, scale) -> None:
    verdict = check_answer(predicted, gold, answer_type, scale=scale)
    assert verdict.correct is False, verdict


def test_decrease_words_give_the_sign() -> None:
    assert check_answer("a decrease of 5.3%", "-0.053", "percent").correct is True
    assert check_answer("下降5.3%", "-0.053", "percent").correct is True
    assert check_answer("decreased by 5.3%", "0.053", "percent").correct is None
    assert check_answer("it fell by 7", "-5", "number").correct is False


def test_a_later_matching_number_is_left_to_the_judge() -> None:
    assert check_answer("In 2019 it grew 12%", "0.12", "percent").correct is None
    assert check_answer("2019; 2018", "2019", "span").correct is None


@pytest.mark.parametrize(
    ("predicted", "gold", "answer_type", "expected"),
    [
        ("Yes, it is greater.", "yes", "yes_no", True),
        ("否", "no", "yes_no", True),
        ("不是", "yes", "yes_no", False),
        ("It went up", "yes", "yes_no", None),
        ("(B)", "B", "choice", True),
        ("option C", "B", "choice", False),
        ("A, C", "AC", "choice", True),
        ("The answer is A company", "B", "choice", None),
        ("积极", "positive", "label", True),
        ("The sentiment is bearish", "负面", "label", True),
        ("neutral", "positive", "label", False),
        ("Fixed-price type.", "fixed-price type", "span", True),
        ("net income", "the revenue", "span", False),
        (
            "cost-plus type and fixed-price type",
            "fixed-price type; cost-plus type",
            "multi_span",
            True,
        ),
        ("fixed-price type", "fixed-price type; cost-plus type", "multi_span", None),
        ("goodwill", "fixed-price type; cost-plus type", "multi_span", False),
        ("Because of higher rates", "rates rose", "text", None),
        ("", "5", "number", False),
    ],
)
def test_labels_choices_and_spans(predicted, gold, answer_type, expected) -> None:
    assert check_answer(predicted, gold, answer_type).correct is expected


def test_unknown_answer_type_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="allowed"):
        check_answer("1", "1", "numbr")
    assert normalize_answer_type("multi-span") == "multi_span"
    assert normalize_answer_type("arithmetic") == "number"


def test_token_f1_treats_cjk_characters_as_tokens() -> None:
    assert token_f1("营业收入增长", "营业收入") == pytest.approx(0.8)
    assert token_f1("the net income", "net income") == 1.0


def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


def _exact_forms(g: float, answer_type: str) -> list[str]:
    """The gold's value in other formats, at its full precision."""
    d = _decimals(format_number(g))
    dollars = f"${g:,.{d}f}" if g >= 0 else f"-${-g:,.{d}f}"
    forms = [format_number(g), f"{g:,.{d}f}", dollars, f"{format_number(g * 100)}%"]
    forms.append(f"{g * 100:.{d}f}%")  # more decimals than needed
    if abs(g) >= 1:
        forms += [f"{g:,.{d}f} million", f"The answer is {g:,.{d + 1}f}."]
    if g < 0:
        forms.append(f"({-g:,.{d}f})")
    if answer_type == "percent":
        forms += [format_number(g * 100), f"{g * 100:.{d + 1}f}"]  # a ratio written as percent
    return forms


def _rounded_forms(g: float, answer_type: str) -> list[str]:
    """Round 1's accepted forms: the gold rounded to 1-2 decimals (lenient mode only)."""
    forms = [f"{g * 100:.2f}%"]
    forms.append(f"{g * 100:.1f}%" if abs(g) >= 0.01 else f"{g * 100:.3f}%")
    if abs(g) >= 1:
        forms += [f"{g:.2f}", f"{g:,.2f} million", f"The answer is {g:,.2f}."]
    if answer_type == "percent":
        forms += [f"{g * 100:.2f}", f"{g * 100:.4f}"]
    return forms


def _rejected_forms(g: float) -> list[str]:
    if g == 0:
        return []
    return [
        format_number(g * 1.1),
        format_number(-g),
        format_number(g * 10),
        format_number(g / 10),
        f"{g * 110:.2f}%",
        f"{-g * 100:.2f}%",
    ]


@pytest.mark.parametrize("rounding", ["strict", "lenient"])
def test_every_finqa_dev_gold_accepts_its_formats_and_rejects_perturbations(
    shared_data, rounding
) -> None:
    items = [i for i in load_finqa(shared_data / "finqa_dev200" / "dev_200.json")]
    assert len(items) == 200
    wrongly_rejected, wrongly_accepted, accepted, rejected = [], [], 0, 0
    for item in items:
        gold, kind = item.gold_answer, item.answer_type
        if kind == "yes_no":
            other = {"yes": "no", "no": "yes"}[gold]
            good, bad = [gold.capitalize() + ".", {"yes": "是", "no": "否"}[gold]], [other]
        else:
            good, bad = _exact_forms(float(gold), kind), _rejected_forms(float(gold))
            if rounding == "lenient":
                good += _rounded_forms(float(gold), kind)
        for pred in good:
            verdict = check_answer(pred, gold, kind, rounding=rounding)
            accepted += verdict.correct is True
            if verdict.correct is not True:
                wrongly_rejected.append((pred, gold, kind, verdict))
        for pred in bad:
            verdict = check_answer(pred, gold, kind, rounding=rounding)
            rejected += verdict.correct is False
            if verdict.correct is not False:
                wrongly_accepted.append((pred, gold, kind, verdict))
    assert wrongly_rejected == []
    assert wrongly_accepted == []
    assert accepted > (1400 if rounding == "lenient" else 1000) and rejected > 1100


def test_tatqa_arithmetic_answers_with_their_scale(shared_data) -> None:
    path = shared_data / "tatqa" / "tatqa_dataset_dev.json"
    items = [i for i in load_tatqa(path) if i.meta.get("tatqa_answer_type") == "arithmetic"]
    items = items[::3]  # a sample keeps the test fast
    assert len(items) > 200
    factor = {"thousand": 1e3, "million": 1e6, "billion": 1e9}
    wrong_scale = {"thousand": "million", "million": "billion", "billion": "thousand"}
    failures = []
    for item in items:
        gold, scale, kind = item.gold_answer, item.meta["scale"], item.answer_type
        g = float(gold)
        good = [gold, f"{g:,.{_decimals(gold)}f}", item.meta["answer_with_scale"]]
        bad = [format_number(g * 1.1), format_number(-g), format_number(g * 10)] if g else []
        if scale == "percent":
            good += [format_number(g / 100), f"{g:.1f}%" if abs(g) >= 10 else f"{g:.2f}%"]
            bad += [f"{g * 1.1:.2f}%", format_number(g * 100)] if g else []
        elif scale in factor:
            full = g * factor[scale]
            good += [f"${full:,.0f}" if g >= 0 else f"-${-full:,.0f}", f"{full / 1e6:.4f} million"]
            bad += [f"{g} {wrong_scale[scale]}", f"{g * 1.1:,.2f} {scale}"] if g else []
        for pred in good:
            if check_answer(pred, gold, kind, scale=scale).correct is not True:
                failures.append(("accept", pred, gold, scale))
        for pred in bad:
            if check_answer(pred, gold, kind, scale=scale).correct is not False:
                failures.append(("reject", pred, gold, scale))
    assert failures == []


def test_parse_amounts_reads_sign_scale_and_percent() -> None:
    (a, b) = parse_amounts("fell to $(1,234) million, or \u22129.86%")
    assert a.value == -1_234_000_000 and a.scale_word == "million"
    assert b.value == -9.86 and b.percent and b.decimals == 2


def test_format_number_keeps_integer_zeros() -> None:
    assert format_number(1100.0) == "1100" and format_number(-1100, max_decimals=0) == "-1100"
    assert format_number(0.5620) == "0.562" and format_number(-0.0000001) == "0"
