"""FinQA program executor: ``subtract(5829, 5735), divide(#0, 5735)`` -> ``0.01639``.

Grammar (FinQA, also ConvFinQA's ``turn_program``): comma-separated steps ``op(arg1, arg2)``;
``#n`` is the result of step n. Arguments are numbers (``1,234``, ``$ 5``, ``5%`` = 0.05),
constants (``const_100``, ``const_m1`` = -1) or, for table ops, a row name looked up in the
table (the second argument is ``none``). A program that is a bare number evaluates to it.

Math ops: add, subtract, multiply, divide, exp (power), greater ("yes"/"no").
Table ops: table_sum, table_average, table_max, table_min over the row's numeric cells.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fingen.errors import FingenError
from fingen.reasoning.tables import find_row, parse_cell_number, row_numbers

__all__ = ["MATH_OPS", "TABLE_OPS", "ProgramError", "Step", "execute_program", "parse_program"]

Value = float | str


class ProgramError(FingenError, ValueError):
    """A FinQA program cannot be parsed or executed; carries the program and the failing step."""

    def __init__(self, reason: str, *, program: str, step: int | None = None) -> None:
        self.reason, self.program, self.step = reason, program, step
        where = f" (step {step})" if step is not None else ""
        super().__init__(f"{reason}{where}: {program[:200]}")


@dataclass(frozen=True)
class Step:
    """One parsed program step: ``op(args[0], args[1])``."""

    op: str
    args: tuple[str, ...]


def _divide(a: float, b: float) -> float:
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return a / b


def _greater(a: float, b: float) -> str:
    return "yes" if a > b else "no"


MATH_OPS: dict[str, Callable[[float, float], Value]] = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": _divide,
    "exp": operator.pow,
    "greater": _greater,
}
TABLE_OPS: dict[str, Callable[[list[float]], float]] = {
    "table_sum": sum,
    "table_average": lambda xs: sum(xs) / len(xs),
    "table_max": max,
    "table_min": min,
}

_CONST = re.compile(r"^const_(m?)(\d+(?:\.\d+)?)$")
_REF = re.compile(r"^#(\d+)$")
_OP_NAME = re.compile(r"\s*,?\s*([a-z_]+)\s*\(")


def _split_args(body: str) -> tuple[str, ...]:
    """Split on top-level ", " so ``1,234`` stays one argument and row names may hold parens."""
    parts, depth, current = [], 0, []
    i = 0
    while i < len(body):
        ch = body[i]
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch == "," and (i + 1 == len(body) or body[i + 1] == " "):
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current).strip())
    return tuple(parts)


def parse_program(program: str) -> list[Step]:
    """Parse a program into steps.

    Raises:
        ProgramError: unknown op, unbalanced parentheses, wrong argument count or stray text.
    """
    text = program.strip()
    if not text:
        raise ProgramError("empty program", program=program)
    if parse_cell_number(text) is not None or _CONST.match(text):
        return [Step("value", (text,))]
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        m = _OP_NAME.match(text, pos)
        if not m:
            raise ProgramError(f"expected an op at offset {pos}", program=program, step=len(steps))
        op, depth, j = m.group(1), 1, m.end()
        while j < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        if depth:
            raise ProgramError("unbalanced parentheses", program=program, step=len(steps))
        if op not in MATH_OPS and op not in TABLE_OPS:
            raise ProgramError(f"unknown op {op!r}", program=program, step=len(steps))
        args = _split_args(text[m.end() : j - 1])
        if op in TABLE_OPS and len(args) > 2:  # a row name holding ", "
            args = (", ".join(args[:-1]), args[-1])
        if len(args) != 2 or not all(args[:1]):
            raise ProgramError(f"{op} needs 2 arguments", program=program, step=len(steps))
        steps.append(Step(op, args))
        pos = j
        rest = text[pos:].lstrip()
        if rest and not rest.startswith(","):
            raise ProgramError(f"stray text {rest[:20]!r}", program=program, step=len(steps))
    return steps


def _number(arg: str, results: list[Value], program: str, step: int) -> float:
    arg = arg.strip()
    if m := _REF.match(arg):
        idx = int(m.group(1))
        if idx >= len(results):
            raise ProgramError(f"reference {arg} before it exists", program=program, step=step)
        value = results[idx]
        if isinstance(value, str):
            raise ProgramError(f"{arg} is {value!r}, not a number", program=program, step=step)
        return value
    if m := _CONST.match(arg):
        value = float(m.group(2))
        return -value if m.group(1) else value
    value = parse_cell_number(arg)
    if value is None:
        raise ProgramError(f"not a number: {arg!r}", program=program, step=step)
    return value


def execute_program(
    program: str, table: Sequence[Sequence[object]] | None = None, *, ndigits: int | None = 5
) -> Value:
    """Run a FinQA program; returns the last step's value (float, or "yes"/"no" for greater).

    Args:
        program: e.g. ``"subtract(5829, 5735), divide(#0, 5735)"``.
        table: rows (first row header) for table ops; row names are matched exactly, then
            case- and space-insensitively.
        ndigits: round the float result like FinQA's ``exe_ans`` (5 digits); None keeps it raw.

    Raises:
        ProgramError: the program is invalid, references a missing row or divides by zero.
    """
    results: list[Value] = []
    for i, step in enumerate(parse_program(program)):
        if step.op == "value":
            results.append(_number(step.args[0], results, program, i))
        elif step.op in TABLE_OPS:
            row = find_row(table or [], step.args[0])
            if row is None:
                raise ProgramError(f"no table row {step.args[0]!r}", program=program, step=i)
            values = row_numbers(row)
            if not values:
                raise ProgramError(f"row {step.args[0]!r} has no numbers", program=program, step=i)
            results.append(TABLE_OPS[step.op](values))
        else:
            a, b = (_number(arg, results, program, i) for arg in step.args)
            try:
                results.append(MATH_OPS[step.op](a, b))
            except (ZeroDivisionError, OverflowError) as exc:
                raise ProgramError(str(exc), program=program, step=i) from exc
            if isinstance(results[-1], complex):
                raise ProgramError("complex result", program=program, step=i)
    result = results[-1]
    if isinstance(result, float) and ndigits is not None:
        return round(result, ndigits)
    return result
