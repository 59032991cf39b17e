"""Answer extraction from model outputs and per-task label extraction."""

from __future__ import annotations

import pytest

from fingen.reasoning.extract import (
    CHOICES,
    SENTIMENT,
    YES_NO,
    LabelSet,
    clean_latex,
    extract_answer,
    extract_boxed,
    extract_label,
    split_reasoning,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>5829-5735=94</think>\n<answer>\\boxed{94}</answer>", "94"),
        ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "1/2"),
        ("so \\boxed{\\text{12.5}\\%}", "12.5%"),
        ("nested \\boxed{a{b{c}}d} end", "abcd"),
        ("<answer> 1,234 million </answer>", "1,234 million"),
        ("The final answer is $1,234 million. Done", "$1,234 million"),
        ("Therefore, the answer is 12.5.", "12.5"),
        ("Final Answer: **Yes**", "Yes"),
        ("所以答案是：积极。", "积极"),
        ("We get 5 and then 7.", "7"),
        ("no number at all", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_number_fallback_can_be_turned_off() -> None:
    assert extract_answer("We get 5 and then 7.", fallback_number=False) is None


def test_unbalanced_boxed_is_ignored() -> None:
    assert extract_boxed("\\boxed{12") is None
    assert extract_boxed("\\boxed{3} and \\boxed{4") == "3"


def test_clean_latex_thousands_and_dollars() -> None:
    assert clean_latex("\\$1{,}234") == "$1,234"
    assert clean_latex("$12.5\\%$") == "12.5%"


def test_split_reasoning_with_tags() -> None:
    split = split_reasoning("<think>\nstep 1\nstep 2\n</think>\n<answer>\\boxed{5}</answer>")
    assert split.reasoning == "step 1\nstep 2"
    assert split.answer_text == "\\boxed{5}"
    assert split.answer == "5"


def test_split_reasoning_without_opening_think_tag() -> None:
    split = split_reasoning("step 1\n</think>\nThe answer is 7")
    assert (split.reasoning, split.answer) == ("step 1", "7")


def test_split_reasoning_untagged_cuts_at_the_answer_line() -> None:
    split = split_reasoning("step 1\nstep 2\nSo the answer is \\boxed{5}.")
    assert split.reasoning == "step 1\nstep 2"
    assert split.answer_text == "So the answer is \\boxed{5}."
    assert split.answer == "5"
    assert split_reasoning("only thinking").answer is None


@pytest.mark.parametrize(
    ("text", "labelset", "expected"),
    [
        ("<think>利润大增</think><answer>积极</answer>", SENTIMENT, "positive"),
        ("The sentiment is clearly negative.", SENTIMENT, "negative"),
        ("Positive, despite some negative news", SENTIMENT, "positive"),
        ("It mentions positive and negative points", SENTIMENT, None),
        ("情绪判断：利空", SENTIMENT, "negative"),
        ("中性", SENTIMENT, "neutral"),
        ("nothing to see", SENTIMENT, None),
        ("Yes, because revenue rose", YES_NO, "yes"),
        ("<answer>不是</answer>", YES_NO, "no"),
        ("答案是否", YES_NO, "no"),
        ("(B)", CHOICES, "B"),
        ("I choose option D.", CHOICES, "D"),
        ("A company grew. The answer is (C).", CHOICES, "C"),
        ("答案：B", CHOICES, "B"),
        ("A", CHOICES, "A"),
        ("A or B", CHOICES, None),
        ("\\boxed{Ｃ}", CHOICES, "C"),
    ],
)
def test_extract_label(text: str, labelset: LabelSet, expected: str | None) -> None:
    assert extract_label(text, labelset) == expected


def test_custom_label_set_with_synonyms() -> None:
    trend = LabelSet.of(["up", "down"], {"up": ["涨", "rise"], "down": ["跌", "fall"]})
    assert extract_label("\\boxed{涨}", trend) == "up"
    assert extract_label("prices will fall", trend) == "down"
    with pytest.raises(ValueError):
        LabelSet.of(["up"], {"sideways": ["横盘"]})
