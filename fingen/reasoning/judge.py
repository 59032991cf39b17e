"""Round 2 of Fin-R1's filter: an LLM judge scores the reasoning 0/1 on seven criteria.

The criteria (Fin-R1): consistent steps leading to the answer, terms shared with the gold
answer, at least 3 steps, no logical errors, little repetition, relevant to the task domain
(a slot: "finance" by default), follows the instruction. A sample passes (``quality=True``)
when at least ``min_passed`` criteria (default all seven) score 1; every criterion's score and
reason is kept in ``CoTSample.reasons`` as ``judge:<criterion>:<0|1>: <reason>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field

from fingen.llm.base import Completion
from fingen.llm.engine import LLMEngine
from fingen.llm.tasks import LLMTask, TaskResult, run_task
from fingen.reasoning.answer_judge import SamplePair, kept_unjudged, sample_pairs
from fingen.records import CoTSample, Failure, QAItem

__all__ = [
    "CRITERIA",
    "DEFAULT_DOMAIN",
    "CriterionScore",
    "ReasoningJudgeTask",
    "ReasoningJudgement",
    "judge_reasoning",
    "judge_samples",
]

CRITERIA = (
    "consistent_steps",
    "shared_terms",
    "min_steps",
    "no_logic_errors",
    "low_repetition",
    "domain_relevant",
    "follows_instruction",
)
DEFAULT_DOMAIN = {"en": "finance", "zh": "金融"}


class CriterionScore(BaseModel):
    reason: str = Field(description="one sentence")
    score: Literal[0, 1]


class ReasoningJudgement(BaseModel):
    """One score per criterion, in the order of :data:`CRITERIA`."""

    consistent_steps: CriterionScore
    shared_terms: CriterionScore
    min_steps: CriterionScore
    no_logic_errors: CriterionScore
    low_repetition: CriterionScore
    domain_relevant: CriterionScore
    follows_instruction: CriterionScore

    def scores(self) -> dict[str, CriterionScore]:
        return {name: getattr(self, name) for name in CRITERIA}


def _clip(text: str, limit: int) -> str:
    """Keep the head and tail of a very long reasoning (the judge sees both ends)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


class ReasoningJudgeTask(LLMTask[SamplePair, CoTSample]):
    """LLM task: score one sample's reasoning on the seven criteria.

    Args:
        lang: prompt language.
        domain: the task domain named in criterion 6 (default "finance" / "金融").
        min_passed: criteria that must score 1 for ``quality=True`` (1..7).
        max_reasoning_chars: longer reasoning is shown as head + tail.
    """

    name = "judge_reasoning"
    template = "reasoning_judge"
    response_model = ReasoningJudgement

    def __init__(
        self,
        lang: str = "en",
        *,
        domain: str | None = None,
        min_passed: int = len(CRITERIA),
        max_reasoning_chars: int = 16000,
        template: str | None = None,
    ) -> None:
        if not 1 <= min_passed <= len(CRITERIA):
            raise ValueError(f"min_passed must be in 1..{len(CRITERIA)}, got {min_passed}")
        super().__init__(lang=lang, template=template)
        self.domain = domain or DEFAULT_DOMAIN.get(lang, "finance")
        self.min_passed, self.max_reasoning_chars = min_passed, max_reasoning_chars

    def item_id(self, pair: SamplePair) -> str:
        return pair.sample.sample_id

    def build(self, pair: SamplePair) -> list[dict[str, str]]:
        return self.render(
            domain=self.domain,
            question=pair.item.question,
            gold=pair.item.gold_answer,
            reasoning=_clip(pair.sample.reasoning, self.max_reasoning_chars),
            answer=pair.sample.answer or "(none)",
        )

    def parse(self, pair: SamplePair, reply: Any, completion: Completion) -> list[CoTSample]:
        judged: ReasoningJudgement = reply
        scores = judged.scores()
        reasons = [f"judge:{k}:{v.score}: {v.reason.strip()}"[:300] for k, v in scores.items()]
        passed = sum(v.score for v in scores.values())
        sample = pair.sample
        update = {"quality": passed >= self.min_passed, "reasons": [*sample.reasons, *reasons]}
        return [sample.model_copy(update=update)]


def judge_reasoning(
    pairs: Iterable[SamplePair], llm: LLMEngine, **task_options: Any
) -> Iterator[TaskResult[SamplePair, CoTSample]]:
    """Score the reasoning of each pair; ``task_options`` go to :class:`ReasoningJudgeTask`."""
    return run_task(ReasoningJudgeTask(**task_options), pairs, llm)


def judge_samples(
    items: Iterable[QAItem],
    samples: Iterable[CoTSample],
    llm: LLMEngine,
    *,
    only_correct: bool = True,
    **task_options: Any,
) -> Iterator[TaskResult[SamplePair, CoTSample]]:
    """Round 2 over a run's samples: one result per sample. Truncated samples, and wrong ones
    with ``only_correct``, pass through unjudged; a failed judgement keeps the sample as it
    was and reports the failure. ``task_options`` go to :class:`ReasoningJudgeTask`."""
    by_id = {it.qa_id: it for it in items}
    pending: list[SamplePair] = []
    for pair in sample_pairs(by_id, samples, stage="judge_reasoning"):
        if isinstance(pair, Failure):
            yield TaskResult(None, pair.item_id, failures=[pair], ok=False)  # type: ignore[arg-type]
        elif pair.sample.finish_reason == "length" or (only_correct and not pair.sample.correct):
            yield TaskResult(pair, pair.sample.sample_id, records=[pair.sample])
        else:
            pending.append(pair)
    if pending:
        for result in judge_reasoning(pending, llm, **task_options):
            yield kept_unjudged(result)
