"""The strict numeric rule (the default, and the RL reward's): within 1 % of the gold or half a
unit of the gold's printed precision; a coarser prediction gets no allowance of its own.
``rounding="lenient"`` keeps round 1's rule."""

from __future__ import annotations

import pytest

from fingen.reasoning.answer_judge import rule_check, verify_samples
from fingen.reasoning.verify import ROUNDING_MODES, check_answer
from fingen.records import CoTSample, QAItem


def strict(predicted: str, gold: str, answer_type: str = "number", **kw) -> bool | None:
    return check_answer(predicted, gold, answer_type, **kw).correct


def lenient(predicted: str, gold: str, answer_type: str = "number", **kw) -> bool | None:
    return check_answer(predicted, gold, answer_type, rounding="lenient", **kw).correct


# (predicted, gold, answer_type, scale): wrong under the strict rule, right under the lenient one
COARSE = [
    ("12", "12.4", "number", None),  # 3.2 % off
    ("4%", "0.0389", "percent", None),  # 2.8 % off
    ("14%", "0.14464", "percent", None),  # 3.2 % off
    ("0.14", "0.14464", "percent", None),
    ("3%", "0.0289", "percent", None),
    ("1.3%", "0.01266", "percent", None),  # 2.7 % off
    ("-3.1%", "-0.03065", "percent", None),
    ("(12)", "-12.4", "number", None),
    ("-12", "-12.4", "number", None),
    ("13 million", "12.6", "number", "million"),  # 3.2 % off
    ("-22%", "-22.5", "percent", "percent"),  # 2.2 % off
    ("0.000011", "0.00001", "number", None),  # 10 % off: no absolute tolerance
]


@pytest.mark.parametrize(("predicted", "gold", "answer_type", "scale"), COARSE)
def test_a_coarse_or_nearby_prediction_is_wrong_when_strict_right_when_lenient(
    predicted, gold, answer_type, scale
) -> None:
    assert strict(predicted, gold, answer_type, scale=scale) is False
    assert lenient(predicted, gold, answer_type, scale=scale) is True


@pytest.mark.parametrize(
    ("predicted", "gold", "answer_type", "scale"),
    [
        ("14.46%", "0.14464", "percent", None),
        ("14.464%", "0.14464", "percent", None),
        ("0.1446", "0.14464", "percent", None),
        ("14.46", "0.14464", "percent", None),  # a ratio written as a bare percent
        ("56%", "0.56197", "percent", None),  # 0.35 % off
        ("3.89%", "0.0389", "percent", None),
        ("12.4", "12.4", "number", None),
        ("12.40", "12.4", "number", None),
        ("$12.4", "12.4", "number", None),
        ("12.6 million", "12.6", "number", "million"),
        ("12,600,000", "12.6", "number", "million"),
        ("$12.6m", "12.6", "number", "million"),
        ("0.0126 billion", "12.6", "number", "million"),
        ("12.5 million", "12.6", "number", "million"),  # 0.8 % off
        ("1,200 million", "$1.2 billion", "number", None),
        ("-0.2222", "-22.22", "percent", "percent"),
        ("-22.22%", "-22.22", "percent", "percent"),
        ("-22%", "-22.22", "percent", "percent"),  # 0.99 % off
        ("(1,234)", "-1234", "number", None),
        ("\u22121,234", "-1234", "number", None),
        ("a decrease of 12.4", "-12.4", "number", None),
        ("0", "0", "percent", None),
        ("0%", "0", "percent", None),
    ],
)
def test_the_same_value_in_another_format_is_right_when_strict(
    predicted, gold, answer_type, scale
) -> None:
    assert strict(predicted, gold, answer_type, scale=scale) is True
    assert lenient(predicted, gold, answer_type, scale=scale) is True


@pytest.mark.parametrize(
    ("predicted", "gold", "answer_type", "scale"),
    [
        ("15.19%", "0.14464", "percent", None),  # x1.05
        ("-14.46%", "0.14464", "percent", None),
        ("12.4", "-12.4", "number", None),
        ("1,234", "-1234", "number", None),
        ("12.4 billion", "12.6", "number", "million"),
        ("12.4 million", "12.6", "number", "million"),  # 1.6 % off
        ("0.4", "0", "number", None),
        ("0.3%", "0", "percent", None),
        ("2018", "2019", "number", None),
    ],
)
def test_perturbations_are_wrong_in_both_modes(predicted, gold, answer_type, scale) -> None:
    assert strict(predicted, gold, answer_type, scale=scale) is False
    assert lenient(predicted, gold, answer_type, scale=scale) is False


def test_the_relative_tolerance_is_inclusive_at_one_percent() -> None:
    assert strict("101", "100") is True
    assert strict("99", "100") is True
    assert strict("101.01", "100") is False
    assert strict("1.01", "1.00") is True  # gold printed to 2 decimals: half a unit is 0.5 %
    assert strict("0.99", "1.00") is True
    assert strict("1.0101", "1.00") is False
    assert strict("-1.01", "-1.00") is True and strict("-1.0101", "-1.00") is False
    assert strict("1.01%", "0.01", "percent") is True
    assert strict("1.0101%", "0.0100", "percent") is False
    assert strict("1.02", "1.00", rel_tol=0.02) is True  # rel_tol is an option


def test_half_a_unit_of_the_golds_printed_precision_is_accepted() -> None:
    for pred in ("11.5", "11.8", "12.5"):  # gold "12" may stand for 11.5..12.5
        verdict = check_answer(pred, "12", "number")
        assert verdict.correct is True and verdict.method == "number:gold_precision", verdict
    assert strict("11.49", "12") is False and strict("12.51", "12") is False
    assert strict("12.35", "12.4") is True and strict("12.45", "12.4") is True
    assert strict("1.25", "1.2") is True and strict("1.15", "1.2") is True  # 4.2 % off
    assert strict("1.26", "1.2") is False and strict("1.14", "1.2") is False
    assert strict("1.25 million", "1.2 million") is True  # gold 1.2 in millions
    assert strict("1.26 million", "1.2 million") is False
    assert strict("1,250,000", "1.2", scale="million") is True
    assert strict("1,260,000", "1.2", scale="million") is False
    assert strict("-11.5", "-12") is True and strict("-11.4", "-12") is False
    assert strict("2.14", "2.1") is True  # a finer prediction that rounds to the gold


def test_the_golds_precision_allowance_is_capped_at_five_percent() -> None:
    assert strict("3.15", "3") is True
    assert strict("3.2", "3") is False and strict("3.5", "3") is False
    assert strict("0.0000105", "0.00001") is True
    assert strict("0.000011", "0.00001") is False
    assert strict("1.1e-5", "1e-5") is False


def test_absolute_tolerance_is_off_by_default_and_available() -> None:
    assert strict("0.000011", "0.00001") is False
    assert strict("0.000011", "0.00001", abs_tol=1e-6) is True
    assert lenient("0.000011", "0.00001") is True
    assert lenient("0.000011", "0.00001", abs_tol=0.0) is False


def test_years_and_spans_stay_exact() -> None:
    assert strict("2019", "2019") is True and strict("in 2019", "2019", "span") is True
    assert strict("2018", "2019", "span") is False
    assert lenient("2018", "2019", "span") is False


def test_lenient_mode_keeps_round_one_rules() -> None:
    assert lenient("2.1", "2.14") is True  # the prediction's own precision
    assert lenient("7%", "0.0389", "percent") is False  # more than 5 % off
    assert lenient("12", "12.6") is False  # rounds to 13
    assert strict("2.1", "2.14") is False  # 1.9 % off


def test_unknown_rounding_mode_is_an_error() -> None:
    assert ROUNDING_MODES == ("strict", "lenient")
    with pytest.raises(ValueError, match="rounding"):
        check_answer("1", "1", "number", rounding="loose")


def _item(gold: str, **fields) -> QAItem:
    return QAItem(qa_id="q1", question="What is it?", gold_answer=gold, **fields)


def _sample(answer: str) -> CoTSample:
    return CoTSample(sample_id="s1", qa_id="q1", answer=answer)


def test_rule_check_and_verify_samples_take_the_rounding_mode() -> None:
    item = _item("0.14464", answer_type="percent")
    checked, verdict = rule_check(item, _sample("14%"))
    assert checked.correct is False and verdict.method == "number"
    checked, verdict = rule_check(item, _sample("14%"), rounding="lenient")
    assert checked.correct is True and checked.reasons[-1].startswith("answer_rule:number:")
    results = list(verify_samples([item], [_sample("14%")], None, judge=False))
    assert [r.records[0].correct for r in results] == [False]
    results = list(verify_samples([item], [_sample("14%")], None, rounding="lenient"))
    assert [r.records[0].correct for r in results] == [True]
    with pytest.raises(ValueError, match="rounding"):
        rule_check(item, _sample("14%"), rounding="loose")


def test_rule_check_applies_the_mode_to_the_program_gold() -> None:
    item = _item("5", answer_type="number", program="divide(1, 7)")  # 0.142857
    checked, verdict = rule_check(item, _sample("0.1429"))
    assert checked.correct is True and verdict.method == "program:number:tolerance"
    assert rule_check(item, _sample("0.14"))[0].correct is False  # 2 % off the program
    assert rule_check(item, _sample("0.14"), rounding="lenient")[0].correct is True
