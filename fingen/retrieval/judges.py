"""Relevance judges: an LLM with a graded 0–2 rubric, or a sentence-transformers CrossEncoder.

Both implement ``Judge``: ``judge(candidates) -> Iterator[Verdict]``, one verdict per candidate
in input order. Grades: 2 = relevant (answers the query), 1 = partially relevant, 0 = not
relevant. A verdict whose model call failed carries a ``Failure`` and no score.

>>> [v.score for v in judge_relevance([Candidate(query, passage)], engine)]  # doctest: +SKIP
[2]
>>> judge = LLMJudge(engine, lang="en")     # the same, as a ``Judge`` for mining and audits
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, Field

from fingen.errors import ConfigError, InputError, MissingExtraError
from fingen.llm.base import Completion
from fingen.llm.tasks import LLMTask, run_task
from fingen.records import Failure, Passage, Query, content_id

if TYPE_CHECKING:
    from fingen.llm.engine import LLMEngine

__all__ = [
    "Candidate",
    "CrossEncoderJudge",
    "Judge",
    "JudgeKind",
    "LLMJudge",
    "RelevanceJudgeTask",
    "RelevanceReply",
    "Verdict",
    "build_judge",
    "judge_relevance",
]

JudgeKind = Literal["llm", "cross_encoder"]


@dataclass(frozen=True)
class Candidate:
    """A (query, passage) pair to judge; ``source`` says where it came from."""

    query: Query
    passage: Passage
    source: str = "local"  # "local" | "global" | "local+global" | "audit"
    similarity: float | None = None

    @property
    def pair_id(self) -> str:
        return content_id(self.query.query_id, self.passage.passage_id, prefix="pair-")


@dataclass(frozen=True)
class Verdict:
    """A judge's answer for one candidate; ``score`` is None when ``failure`` is set."""

    candidate: Candidate
    score: int | None
    judge: str
    rationale: str = ""
    raw_score: float | None = None  # the cross-encoder's output, when there is one
    failure: Failure | None = None
    cached: bool = False


@runtime_checkable
class Judge(Protocol):
    """Labels candidates with a graded 0–2 relevance score."""

    name: str

    def judge(self, candidates: Iterable[Candidate]) -> Iterator[Verdict]: ...


class RelevanceReply(BaseModel):
    """What the LLM judge must answer: a short reason, then the grade."""

    rationale: str = Field(
        description="one or two sentences: why the passage does or does not help"
    )
    score: int = Field(ge=0, le=2, description="2 relevant, 1 partially relevant, 0 not relevant")


class RelevanceJudgeTask(LLMTask[Candidate, Verdict]):
    """LLM task: one candidate -> one ``Verdict`` (prompt ``relevance_judge.<lang>.jinja``)."""

    name = "relevance_judge"
    template = "relevance_judge"
    response_model = RelevanceReply

    def __init__(
        self,
        *,
        lang: str = "en",
        model: str = "",
        max_chars: int = 6000,
        template: str | None = None,
    ):
        super().__init__(lang=lang, template=template)
        self.judge_name = f"llm:{model}#{self.prompt_hash}"
        self.max_chars = max_chars

    def item_id(self, item: Candidate) -> str:
        return item.pair_id

    def build(self, item: Candidate) -> list[dict[str, str]]:
        return self.render(
            query=item.query.text,
            level=item.query.level,
            title=item.passage.title,
            passage=item.passage.text[: self.max_chars],
        )

    def parse(self, item: Candidate, reply: RelevanceReply, completion: Completion) -> list[Any]:
        return [
            Verdict(
                item,
                reply.score,
                self.judge_name,
                reply.rationale.strip(),
                cached=completion.cached,
            )
        ]


def judge_relevance(
    candidates: Iterable[Candidate],
    llm: LLMEngine,
    *,
    lang: str = "en",
    max_chars: int = 6000,
    task: RelevanceJudgeTask | None = None,
) -> Iterator[Verdict]:
    """One graded 0–2 verdict per candidate, in order; requests run concurrently and are
    cached. A failed call gives a verdict without score that carries its ``Failure``."""
    task = task or RelevanceJudgeTask(lang=lang, model=llm.model, max_chars=max_chars)
    for result in run_task(task, candidates, llm):
        if result.ok and result.records:
            yield result.records[0]
            continue
        failure = (result.failures or [_missing(result.item_id)])[0]
        yield Verdict(result.item, None, task.judge_name, failure=failure, cached=result.cached)


class LLMJudge:
    """``judge_relevance`` as a ``Judge`` (what mining and audits take)."""

    def __init__(self, llm: LLMEngine, *, lang: str = "en", max_chars: int = 6000) -> None:
        self.llm = llm
        self.task = RelevanceJudgeTask(lang=lang, model=llm.model, max_chars=max_chars)
        self.name = self.task.judge_name

    def judge(self, candidates: Iterable[Candidate]) -> Iterator[Verdict]:
        """Yield one verdict per candidate, in order (failed calls carry their ``Failure``)."""
        return judge_relevance(candidates, self.llm, task=self.task)


def _missing(item_id: str) -> Failure:
    return Failure(stage=RelevanceJudgeTask.name, item_id=item_id, reason="no_verdict")


class CrossEncoderJudge:
    """A sentence-transformers ``CrossEncoder`` given by path, mapped to grades by thresholds.

    Args:
        model: local folder (or cached hub name) of a CrossEncoder; loaded offline.
        threshold: model scores ``>= threshold`` are graded 2 (relevant).
        partial_threshold: if set (and below ``threshold``), scores ``>=`` it are graded 1.
        batch_size: pairs per forward pass.
        device: torch device.
    """

    def __init__(
        self,
        model: str,
        *,
        threshold: float = 0.5,
        partial_threshold: float | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        max_chars: int = 6000,
    ) -> None:
        if partial_threshold is not None and partial_threshold > threshold:
            raise ConfigError("partial_threshold must not exceed threshold", where="judge")
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise MissingExtraError("sentence-transformers", "embed", "CrossEncoderJudge") from exc
        try:
            self.model = CrossEncoder(model, device=device, local_files_only=True)
        except Exception as exc:  # hub/OS/config errors all mean "not usable offline"
            raise InputError(
                f"cannot load CrossEncoder offline ({type(exc).__name__}: {str(exc)[:200]})",
                path=model,
            ) from exc
        self.name = f"cross-encoder:{model}"
        self.threshold, self.partial_threshold = threshold, partial_threshold
        self.batch_size, self.max_chars = batch_size, max_chars

    def grade(self, score: float) -> int:
        """Map a raw model score to the 0–2 scale."""
        if score >= self.threshold:
            return 2
        if self.partial_threshold is not None and score >= self.partial_threshold:
            return 1
        return 0

    def judge(self, candidates: Iterable[Candidate]) -> Iterator[Verdict]:
        """Yield one verdict per candidate, in order, scoring ``batch_size`` pairs at a time."""
        batch: list[Candidate] = []
        for cand in candidates:
            batch.append(cand)
            if len(batch) >= self.batch_size:
                yield from self._score(batch)
                batch = []
        if batch:
            yield from self._score(batch)

    def _score(self, batch: Sequence[Candidate]) -> Iterator[Verdict]:
        pairs = [(c.query.text, c.passage.text[: self.max_chars]) for c in batch]
        scores = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        for cand, raw in zip(batch, scores, strict=True):
            value = float(raw)
            rationale = f"cross-encoder score {value:.4f} (threshold {self.threshold:g})"
            yield Verdict(cand, self.grade(value), self.name, rationale, raw_score=value)


def build_judge(
    kind: str = "llm",
    *,
    llm: LLMEngine | None = None,
    lang: str = "en",
    model: str | None = None,
    threshold: float = 0.5,
    partial_threshold: float | None = None,
    device: str = "cpu",
) -> Judge:
    """A judge by kind: ``"llm"`` (needs ``llm``) or ``"cross_encoder"`` (needs ``model``).

    Raises:
        ConfigError: unknown kind, or the engine/model path it needs is missing.
    """
    if kind not in get_args(JudgeKind):
        raise ConfigError(f"judge must be one of {get_args(JudgeKind)}, got {kind!r}")
    if kind == "llm":
        if llm is None:
            raise ConfigError("the 'llm' judge needs an LLM engine", where="judge")
        return LLMJudge(llm, lang=lang)
    if not model:
        raise ConfigError("the 'cross_encoder' judge needs a model path", where="cross_encoder")
    return CrossEncoderJudge(
        model, threshold=threshold, partial_threshold=partial_threshold, device=device
    )
