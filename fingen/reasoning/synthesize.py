"""Questions written by an LLM from a passage or a table, kept only when their program checks out.

The LLM writes a question, its answer and, for numeric answers, a FinQA-style program. The
program is executed (:mod:`fingen.reasoning.programs`) and the item is kept only when the
executed value matches the stated answer (:func:`fingen.reasoning.verify.check_answer`).
Rejected questions become ``Failure`` rows with reason ``program_invalid`` (missing, does not
parse or run), ``program_mismatch`` (runs to another value), ``program_ungrounded`` (uses a
number found neither in the text nor the question) or ``empty_question``::

    src = SynthSource.from_passage(passage)          # or SynthSource.from_table(rows, title=...)
    for result in synthesize_items([src], engine, n=2): ...
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from fingen.llm.base import Completion
from fingen.llm.engine import LLMEngine
from fingen.llm.tasks import LLMTask, TaskResult, run_task
from fingen.reasoning.numbers import format_number, parse_amounts
from fingen.reasoning.programs import ProgramError, execute_program, parse_program
from fingen.reasoning.tables import parse_cell_number, render_table
from fingen.reasoning.verify import check_answer
from fingen.records import Failure, Passage, QAItem, content_id

__all__ = [
    "NUMERIC_TYPES",
    "SynthQA",
    "SynthReply",
    "SynthSource",
    "SynthesizeTask",
    "check_program",
    "synthesize_items",
]

NUMERIC_TYPES = ("number", "percent")


@dataclass(frozen=True)
class SynthSource:
    """What questions are written from: text and/or a table (rows, first row the header)."""

    source_id: str
    text: str
    table: list[list[str]] | None = None
    title: str = ""
    doc_id: str = ""
    source: str = "synthesize"
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_passage(cls, passage: Passage, *, source: str = "synthesize") -> SynthSource:
        return cls(passage.passage_id, passage.text, None, passage.title, passage.doc_id, source)

    @classmethod
    def from_table(
        cls,
        rows: Sequence[Sequence[object]],
        *,
        title: str = "",
        text: str = "",
        source_id: str | None = None,
        source: str = "synthesize",
    ) -> SynthSource:
        table = [["" if c is None else str(c) for c in row] for row in rows]
        sid = source_id or content_id(title, text, table, prefix="tbl_")
        return cls(sid, text, table, title, "", source)

    @property
    def context(self) -> str:
        """The text the question is asked over (text, then the rendered table)."""
        table = render_table(self.table) if self.table else ""
        return "\n".join(p for p in (self.text.strip(), table) if p)


class SynthQA(BaseModel):
    question: str
    answer: str
    answer_type: Literal["number", "percent", "yes_no", "span", "text"]
    program: str | None = Field(
        None, description="FinQA program, e.g. subtract(5829, 5735), divide(#0, 5735)"
    )


class SynthReply(BaseModel):
    items: list[SynthQA] = Field(min_length=1)


def _readings(value: float) -> set[float]:
    return {abs(value), abs(value) / 100, abs(value) * 100}


def _known_numbers(texts: Iterable[str], table: list[list[str]] | None) -> set[float]:
    known: set[float] = set()
    for text in texts:
        for a in parse_amounts(text):
            known |= _readings(a.mantissa) | _readings(a.value)
    for row in table or []:
        for cell in row:
            v = parse_cell_number(cell)
            if v is not None:
                known |= _readings(v)
    return known


def _ungrounded(program: str, known: set[float]) -> list[str]:
    """Program arguments that are numbers found nowhere in the source."""
    missing = []
    for step in parse_program(program):
        for arg in step.args:
            arg = arg.strip()
            if arg.startswith("#") or arg.startswith("const_") or arg.lower() == "none":
                continue
            v = parse_cell_number(arg)
            if v is None or v == 0:
                continue  # a table row name, or zero
            if not any(math.isclose(abs(v), k, rel_tol=1e-9) for k in known):
                missing.append(arg)
    return missing


def check_program(
    qa: SynthQA, source: SynthSource, *, require_grounded: bool = True
) -> tuple[str | None, str, str | None]:
    """Check one written question: ``(failure reason or None, detail, executed value)``."""
    program = (qa.program or "").strip()
    if qa.answer_type not in NUMERIC_TYPES and not program:
        return None, "no program needed", None
    if not program:
        return "program_invalid", f"no program for a {qa.answer_type} answer", None
    try:
        value = execute_program(program, source.table)
    except ProgramError as exc:
        return "program_invalid", str(exc), None
    executed = value if isinstance(value, str) else format_number(value)
    if require_grounded:
        known = _known_numbers([source.text, source.title, qa.question], source.table)
        missing = _ungrounded(program, known)
        if missing:
            return "program_ungrounded", f"not in the source: {', '.join(missing)}", executed
    verdict = check_answer(executed, qa.answer, qa.answer_type)
    if verdict.correct is not True:
        detail = f"executed {executed!r}, stated {qa.answer!r} ({verdict.method})"
        return "program_mismatch", detail, executed
    return None, verdict.method, executed


class SynthesizeTask(LLMTask[SynthSource, QAItem]):
    """LLM task: ``n`` questions per :class:`SynthSource`, kept when their program checks out."""

    name = "synthesize"
    template = "synthesize"
    response_model = SynthReply

    def __init__(
        self,
        lang: str = "en",
        *,
        n: int = 2,
        require_grounded: bool = True,
        min_chars: int = 0,
        template: str | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        super().__init__(lang=lang, template=template)
        self.n, self.require_grounded, self.min_chars = n, require_grounded, min_chars

    def item_id(self, src: SynthSource) -> str:
        return src.source_id

    def refuse(self, src: SynthSource) -> tuple[str, str] | None:
        size = len(src.text.strip())
        return ("too_short", f"{size} < {self.min_chars} chars") if size < self.min_chars else None

    def build(self, src: SynthSource) -> list[dict[str, str]]:
        return self.render(
            title=src.title,
            text=src.context,
            n=self.n,
            has_table=bool(src.table),
        )

    def parse(self, src: SynthSource, reply: Any, completion: Completion) -> list[QAItem | Failure]:
        out: list[QAItem | Failure] = []
        for qa in reply.items[: self.n]:
            question = qa.question.strip()
            raw = qa.model_dump_json()
            if not question or not qa.answer.strip():
                out.append(self._fail(src, "empty_question", "empty question or answer", raw))
                continue
            reason, detail, executed = check_program(
                qa, src, require_grounded=self.require_grounded
            )
            if reason is not None:
                out.append(self._fail(src, reason, detail, raw))
                continue
            meta: dict[str, Any] = {"source_id": src.source_id, "doc_id": src.doc_id, **src.meta}
            if executed is not None:
                meta["exe_ans"] = executed
            if src.table:
                meta["table"] = src.table
            out.append(
                QAItem(
                    qa_id=content_id("synth", src.source_id, question),
                    question=question,
                    context=src.context,
                    gold_answer=qa.answer.strip(),
                    answer_type=qa.answer_type,
                    source=src.source,
                    program=(qa.program or "").strip() or None,
                    meta=meta,
                )
            )
        return out

    def _fail(self, src: SynthSource, reason: str, detail: str, raw: str) -> Failure:
        return Failure(
            stage=self.name, item_id=src.source_id, reason=reason, detail=detail, raw=raw
        )


def synthesize_items(
    sources: Iterable[SynthSource], llm: LLMEngine, **task_options: Any
) -> Iterator[TaskResult[SynthSource, QAItem]]:
    """Write and check questions for every source; ``task_options`` go to :class:`SynthesizeTask`."""
    return run_task(SynthesizeTask(**task_options), sources, llm)
