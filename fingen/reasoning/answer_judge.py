"""Round 1 of Fin-R1's filter: the answer check. Rules first, an LLM judge (0/1) for the rest.

:func:`rule_check` runs :func:`fingen.reasoning.verify.check_answer` on a sample's extracted
answer (the item's ``answer_type`` and TAT-QA ``scale``; a FinQA-style ``program`` is executed
as a second gold reading). It sets ``correct`` when the rules decide and leaves it None when
they cannot (free text); :class:`AnswerJudgeTask` asks the LLM for those::

    for result in verify_samples(items, samples, engine):   # rules, then the judge
        result.records   # [the sample with `correct` set]; result.failures
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from fingen.llm.base import Completion
from fingen.llm.engine import LLMEngine
from fingen.llm.tasks import LLMTask, TaskResult, run_task
from fingen.reasoning.numbers import format_number
from fingen.reasoning.programs import ProgramError, execute_program
from fingen.reasoning.verify import ROUNDING_MODES, Verdict, check_answer
from fingen.records import CoTSample, Failure, QAItem

__all__ = [
    "AnswerJudgeTask",
    "AnswerJudgement",
    "SamplePair",
    "judge_answers",
    "program_gold",
    "rule_check",
    "sample_pairs",
    "verify_samples",
]


class SamplePair(NamedTuple):
    """A teacher sample with the question it answers (the item a judge sees)."""

    item: QAItem
    sample: CoTSample


def program_gold(item: QAItem) -> str | None:
    """The executed value of the item's program (with ``meta["table"]``), or None."""
    if not item.program:
        return None
    try:
        value = execute_program(item.program, item.meta.get("table") or None)
    except ProgramError:
        return None
    return value if isinstance(value, str) else format_number(value)


def rule_check(
    item: QAItem, sample: CoTSample, *, rounding: str = "strict"
) -> tuple[CoTSample, Verdict]:
    """Check ``sample.answer`` against the gold by rules (``rounding``: strict | lenient, see
    :func:`fingen.reasoning.verify.check_answer`).

    Returns the sample with ``correct`` set (None when undecided) and the rule's reason
    appended to ``reasons``, and the verdict.
    """
    if rounding not in ROUNDING_MODES:  # a config error, not an answer the judge should see
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {list(ROUNDING_MODES)}")
    scale = item.meta.get("scale") or None
    try:
        verdict = check_answer(
            sample.answer, item.gold_answer, item.answer_type, scale=scale, rounding=rounding
        )
    except ValueError as exc:  # an answer_type the rules do not know: let the judge decide
        verdict = Verdict(None, "unknown_type", str(exc))
    if verdict.correct is not True and sample.answer:
        executed = program_gold(item)
        if executed is not None and executed != item.gold_answer:
            second = check_answer(sample.answer, executed, item.answer_type, rounding=rounding)
            if second.correct is True:
                verdict = Verdict(True, f"program:{second.method}", second.detail)
    reason = f"answer_rule:{verdict.method}" + (f": {verdict.detail}" if verdict.detail else "")
    updated = sample.model_copy(
        update={"correct": verdict.correct, "reasons": [*sample.reasons, reason]}
    )
    return updated, verdict


class AnswerJudgement(BaseModel):
    """The judge's reply: a short reason, then 1 (agrees with the gold) or 0."""

    reason: str = Field(description="one sentence")
    correct: Literal[0, 1]


class AnswerJudgeTask(LLMTask[SamplePair, CoTSample]):
    """LLM task: does a sample's final answer agree with the gold answer? (0/1)."""

    name = "answer_judge"
    template = "answer_judge"
    response_model = AnswerJudgement

    def __init__(self, lang: str = "en", *, template: str | None = None) -> None:
        super().__init__(lang=lang, template=template)

    def item_id(self, pair: SamplePair) -> str:
        return pair.sample.sample_id

    def build(self, pair: SamplePair) -> list[dict[str, str]]:
        candidate = pair.sample.answer or ""
        return self.render(
            question=pair.item.question,
            gold=pair.item.gold_answer,
            candidate=candidate,
        )

    def parse(self, pair: SamplePair, reply: Any, completion: Completion) -> list[CoTSample]:
        judged: AnswerJudgement = reply
        reason = f"answer_judge:{judged.correct}: {judged.reason.strip()}"[:500]
        sample = pair.sample
        update = {"correct": bool(judged.correct), "reasons": [*sample.reasons, reason]}
        return [sample.model_copy(update=update)]


def judge_answers(
    pairs: Iterable[SamplePair], llm: LLMEngine, *, lang: str = "en"
) -> Iterator[TaskResult[SamplePair, CoTSample]]:
    """Run the answer judge over the pairs the rules left undecided."""
    return run_task(AnswerJudgeTask(lang), pairs, llm)


def sample_pairs(
    items: Mapping[str, QAItem], samples: Iterable[CoTSample], *, stage: str
) -> Iterator[SamplePair | Failure]:
    """Each sample with its question; a sample of an unknown question is a ``Failure``."""
    for sample in samples:
        item = items.get(sample.qa_id)
        if item is not None:
            yield SamplePair(item, sample)
        else:
            detail = f"qa_id {sample.qa_id} is not among the items"
            yield Failure(stage=stage, item_id=sample.sample_id, reason="unknown_item",
                          detail=detail)  # fmt: skip


def _failed(failure: Failure) -> TaskResult[SamplePair, CoTSample]:
    return TaskResult(None, failure.item_id, failures=[failure], ok=False)  # type: ignore[arg-type]


def kept_unjudged(result: TaskResult[SamplePair, CoTSample]) -> TaskResult[SamplePair, CoTSample]:
    """A failed judgement keeps the sample as it was; the failure is a rejected row."""
    if not result.ok:
        result.ok, result.records = True, [result.item.sample]
    return result


def verify_samples(
    items: Iterable[QAItem],
    samples: Iterable[CoTSample],
    llm: LLMEngine | None,
    *,
    judge: bool = True,
    lang: str = "en",
    rounding: str = "strict",
) -> Iterator[TaskResult[SamplePair, CoTSample]]:
    """Round 1: one result per sample, the sample with ``correct`` set. Rules decide first
    (numbers by the ``rounding`` rule: strict | lenient); with ``judge`` the LLM answer judge
    decides what they leave open (a failed judgement keeps the sample undecided and reports
    the failure)."""
    by_id = {it.qa_id: it for it in items}
    undecided: list[SamplePair] = []
    for pair in sample_pairs(by_id, samples, stage="verify"):
        if isinstance(pair, Failure):
            yield _failed(pair)
            continue
        checked, verdict = rule_check(pair.item, pair.sample, rounding=rounding)
        if verdict.correct is None and judge:
            undecided.append(SamplePair(pair.item, checked))
        else:
            yield TaskResult(pair, checked.sample_id, records=[checked])
    if undecided:
        if llm is None:
            raise ValueError("undecided samples need an LLM engine for the answer judge")
        for result in judge_answers(undecided, llm, lang=lang):
            yield kept_unjudged(result)
