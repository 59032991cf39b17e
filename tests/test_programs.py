"""FinQA program executor: real dev programs reproduce exe_ans; bad programs raise ProgramError."""

from __future__ import annotations

import json
import math

import pytest

from fingen.reasoning.programs import ProgramError, execute_program, parse_program

TABLE = [
    ["", "2019", "2018", "2017"],
    ["revenue", "$ 1,000", "$ 800", "$ 600"],
    ["operating margin", "11.4% ( 11.4 % )", "7.8% ( 7.8 % )", "7.4% ( 7.4 % )"],
    ["other items", "-24 ( 24 )", "( 4 )", "11"],
]


def test_two_step_program_with_reference() -> None:
    assert execute_program("subtract(5829, 5735), divide(#0, 5735)") == round(94 / 5735, 5)


def test_constants_percent_strings_and_formatted_numbers() -> None:
    assert execute_program("multiply(351, const_m1), add(#0, 538)") == 187.0
    assert execute_program("multiply(25%, 5283.3)") == pytest.approx(1320.825)
    assert execute_program("add($ 1,234, const_1000)") == 2234.0
    assert execute_program("divide(6.9%, const_100), add(const_1, #0), exp(#1, 10)") == round(
        1.00069**10, 5
    )


def test_greater_returns_yes_or_no() -> None:
    assert execute_program("greater(5, 3)") == "yes"
    assert execute_program("subtract(3, 5), greater(#0, const_0)") == "no"


def test_table_ops_look_up_the_row_by_name() -> None:
    assert execute_program("table_sum(revenue, none)", TABLE) == 2400.0
    assert execute_program("table_average(operating margin, none)", TABLE) == pytest.approx(
        (0.114 + 0.078 + 0.074) / 3, abs=1e-5
    )
    assert execute_program("table_min(other items, none)", TABLE) == -24.0
    assert execute_program("table_max(Revenue, none), divide(#0, const_2)", TABLE) == 500.0


def test_bare_number_program_is_its_value() -> None:
    assert execute_program("206588") == 206588.0
    assert parse_program("206588")[0].op == "value"


@pytest.mark.parametrize(
    ("program", "reason"),
    [
        ("", "empty"),
        ("divide(5, 0)", "division"),
        ("frobnicate(1, 2)", "unknown op"),
        ("add(1, 2", "unbalanced"),
        ("add(1)", "2 arguments"),
        ("add(#3, 1)", "before it exists"),
        ("add(one, 2)", "not a number"),
        ("table_sum(missing row, none)", "no table row"),
        ("add(1, 2) junk", "stray"),
        ("greater(1, 2), add(#0, 1)", "not a number"),
    ],
)
def test_invalid_programs_raise_program_error_with_context(program: str, reason: str) -> None:
    with pytest.raises(ProgramError, match=reason) as info:
        execute_program(program, TABLE)
    assert info.value.program == program
    assert isinstance(info.value, ValueError)


def test_all_finqa_dev_programs_reproduce_exe_ans(shared_data) -> None:
    items = json.loads((shared_data / "finqa_dev200" / "dev_200.json").read_text())
    assert len(items) == 200
    mismatches = []
    for item in items:
        qa = item["qa"]
        result, gold = execute_program(qa["program"], item["table"]), qa["exe_ans"]
        same = (
            result == gold
            if isinstance(gold, str) or isinstance(result, str)
            else math.isclose(result, gold, rel_tol=1e-6, abs_tol=1e-5)
        )
        if not same:
            mismatches.append((item["id"], qa["program"], result, gold))
    assert mismatches == []
