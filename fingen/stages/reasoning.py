"""Reasoning stages (Fin-R1 CoT pipeline, "LLMs Meet Finance" labels): thin adapters.

``qa_source`` -> QAItem; ``synthesize`` Passage -> QAItem; ``distill`` QAItem -> CoTSample;
``verify`` (round 1) and ``judge_reasoning`` (round 2) fill ``correct`` / ``quality``;
``route`` -> outputs ``sft`` (SFTRecord) and ``rl`` (RLRecord); ``preference`` -> DPORecord.
Inputs default to the run's records of their kind so far (the latest version of each
sample). Per-source counts and reasons go to ``stats.extra``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import Field

from fingen.llm.tasks import TaskResult
from fingen.reasoning.answer_judge import verify_samples
from fingen.reasoning.distill import DEFAULT_TEMPERATURE, distill_samples
from fingen.reasoning.judge import judge_samples
from fingen.reasoning.mapped import FieldMapping, load_qa
from fingen.reasoning.preference import PairOptions, preference_pairs
from fingen.reasoning.route import route_items
from fingen.reasoning.synthesize import SynthSource, synthesize_items
from fingen.records import CoTSample, Failure, QAItem
from fingen.stages.base import StageContext, StageParams, stage

__all__ = [
    "DistillParams",
    "JudgeReasoningParams",
    "PreferenceParams",
    "QASourceParams",
    "RouteParams",
    "SynthesizeParams",
    "VerifyParams",
    "distill",
    "judge_reasoning",
    "preference",
    "qa_source",
    "route",
    "synthesize",
    "verify",
]

Refs = str | list[str] | None
Tally = defaultdict[str, Counter[str]]
_SAMPLES = {"input": "cot", "items": "qa"}


def _tally() -> Tally:
    return defaultdict(Counter)


def _plain(table: Tally) -> dict[str, dict[str, int]]:
    return {k: dict(v) for k, v in sorted(table.items())}


# -- qa_source --------------------------------------------------------------------------------
class QASourceParams(StageParams):
    file_params = ("path",)

    source: Literal["finqa", "tatqa", "convfinqa", "jsonl", "csv", "hf"]
    path: str = Field(description="file, or for hf a hub name / save_to_disk folder")
    name: str | None = Field(None, description="QAItem.source (default: the source type)")
    split: str | None = Field(None, description="hf split (default: every split)")
    fields: FieldMapping | None = Field(None, description="column mapping for jsonl/csv/hf")
    limit: int | None = Field(None, ge=1, description="keep at most this many items")
    skip: int = Field(0, ge=0, description="skip this many items first")

    def input_paths(self) -> list[tuple[str, str]]:
        return [] if self.source == "hf" else super().input_paths()  # hf: a hub name too


@stage(QASourceParams, outputs={"": "qa"})
def qa_source(ctx: StageContext, params: QASourceParams) -> None:
    """Load QA items (FinQA, TAT-QA, ConvFinQA, JSONL/CSV/HF with a field mapping).

    Example: ``{stage: qa_source, params: {source: finqa, path: dev.json, limit: 20}}``
    """
    items = load_qa(
        params.source, ctx.config.resolve_path(params.path), name=params.name,
        split=params.split, fields=params.fields, skip=params.skip, limit=params.limit,
    )  # fmt: skip
    types, bar = Counter[str](), ctx.progress("items")
    for item in ctx.count(items):
        ctx.output().write(item)
        types[f"{item.source}:{item.answer_type}"] += 1
        bar.advance()
    ctx.stats.extra["answer_types"] = dict(types)


# -- synthesize -------------------------------------------------------------------------------
class SynthesizeParams(StageParams):
    input: Refs = Field(None, description="Passages (default: the run's)")
    n: int = Field(2, ge=1, le=20, description="questions asked per passage")
    min_chars: int = Field(200, ge=0, description="shorter passages fail as too_short")
    require_grounded: bool = Field(True, description="program numbers must occur in the text")
    name: str = Field("synthesize", description="QAItem.source")
    limit: int | None = Field(None, ge=1, description="passages used at most")


@stage(SynthesizeParams, inputs={"input": "passage"}, outputs={"": "qa"})
def synthesize(ctx: StageContext, params: SynthesizeParams) -> None:
    """Passages -> QAItems whose FinQA programs execute to the stated answers.

    Example: ``{stage: synthesize, params: {input: chunk, n: 2}}``
    """
    passages = list(ctx.input("input", params.input))[: params.limit]
    sources = [SynthSource.from_passage(p, source=params.name) for p in passages]
    options = params.model_dump(include={"n", "require_grounded", "min_chars"})
    results = synthesize_items(sources, ctx.llm(), lang=ctx.lang, **options)
    types = Counter[str]()
    for item in ctx.collect(results, ctx.progress("passages", len(sources))):
        ctx.output().write(item)
        types[item.answer_type] += 1
    ctx.stats.extra["questions"] = sum(types.values())
    ctx.stats.extra["answer_types"] = dict(types)


# -- distill ----------------------------------------------------------------------------------
class DistillParams(StageParams):
    input: Refs = Field(None, description="QAItems (default: the run's)")
    n: int = Field(4, ge=1, le=64, description="teacher samples per question")
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, description="default: llm.max_tokens")
    seed: int | None = Field(None, description="sample i uses seed + i")
    top_p: float | None = Field(None, gt=0, le=1)
    limit: int | None = Field(None, ge=1, description="questions used at most")


@stage(DistillParams, inputs={"input": "qa"}, outputs={"": "cot"}, role="teach")
def distill(ctx: StageContext, params: DistillParams) -> None:
    """n teacher samples per QAItem (Fin-R1: no system prompt, T=0.6, \\boxed{} answer).

    Example: ``{stage: distill, params: {n: 4, max_tokens: 2048}}``
    """
    items = list(ctx.input("input", params.input))[: params.limit]
    source = {it.qa_id: it.source for it in items}
    options = params.model_dump(include={"temperature", "max_tokens", "seed", "top_p"})
    results = distill_samples(items, ctx.llm(), n=params.n, lang=ctx.lang, **options)
    per_source = _tally()
    for sample in ctx.collect(results, ctx.progress("samples", len(items) * params.n)):
        ctx.output().write(sample)
        tally = per_source[source[sample.qa_id]]
        tally["samples"] += 1
        tally["truncated"] += sample.finish_reason == "length"
        tally["no_answer"] += sample.answer is None
    ctx.stats.extra["per_source"] = _plain(per_source)


# -- verify / judge_reasoning ------------------------------------------------------------------
def _write_samples(
    ctx: StageContext,
    items: dict[str, QAItem],
    results: Iterable[TaskResult],
    label: Callable[[CoTSample], str],
) -> Tally:
    per_source = _tally()
    for sample in ctx.collect(results, ctx.progress("samples")):
        ctx.output().write(sample)
        item = items.get(sample.qa_id)
        per_source[item.source if item else "?"][label(sample)] += 1
    return per_source


class VerifyParams(StageParams):
    input: Refs = Field(None, description="CoTSamples (default: the run's)")
    items: Refs = Field(None, description="QAItems (default: the run's)")
    judge: bool = Field(True, description="ask the LLM answer judge when the rules cannot decide")
    rounding: Literal["strict", "lenient"] = Field(
        "strict",
        description="numbers: strict (within 1% or the gold's printed precision) or lenient "
        "(a prediction rounded to its own coarser precision also passes)",
    )


@stage(VerifyParams, inputs=_SAMPLES, outputs={"": "cot"}, role="judge", judges="cot")
def verify(ctx: StageContext, params: VerifyParams) -> None:
    """Round 1: answer check by rules, then an LLM judge (0/1) for what the rules leave open.

    Example: ``{stage: verify, params: {input: distill, judge: true}}``
    """
    items = {it.qa_id: it for it in ctx.input("items", params.items)}
    samples = ctx.input("input", params.input)
    results = verify_samples(
        items.values(), samples, ctx.llm(), judge=params.judge, lang=ctx.lang,
        rounding=params.rounding,
    )  # fmt: skip
    labels = {True: "correct", False: "wrong", None: "undecided"}
    methods = Counter[str]()

    def label(sample: CoTSample) -> str:
        last = sample.reasons[-1] if sample.reasons else ""
        if last.startswith("answer_judge:"):
            methods["llm_judge"] += 1
        elif sample.correct is None and params.judge:
            methods["llm_judge_failed"] += 1
        else:
            methods[last.split(":")[1] if last.startswith("answer_rule:") else "?"] += 1
        return labels[sample.correct]

    per_source = _write_samples(ctx, items, results, label)
    ctx.stats.extra.update(per_source=_plain(per_source), methods=dict(methods))


class JudgeReasoningParams(StageParams):
    input: Refs = Field(None, description="CoTSamples (default: the run's)")
    items: Refs = Field(None, description="QAItems (default: the run's)")
    domain: str | None = Field(None, description='task domain (default "finance" / "金融")')
    min_passed: int = Field(7, ge=1, le=7, description="criteria that must score 1")
    only_correct: bool = Field(True, description="judge only samples with a correct answer")
    max_reasoning_chars: int = Field(16000, ge=1000)


@stage(JudgeReasoningParams, inputs=_SAMPLES, outputs={"": "cot"}, role="judge", judges="cot")
def judge_reasoning(ctx: StageContext, params: JudgeReasoningParams) -> None:
    """Round 2: the reasoning scored 0/1 on Fin-R1's seven criteria (``quality``).

    Example: ``{stage: judge_reasoning, params: {domain: corporate finance}}``
    """
    items = {it.qa_id: it for it in ctx.input("items", params.items)}
    options = params.model_dump(include={"domain", "min_passed", "max_reasoning_chars"})
    results = judge_samples(
        items.values(), ctx.input("input", params.input), ctx.llm(),
        only_correct=params.only_correct, lang=ctx.lang, **options,
    )  # fmt: skip
    labels = {True: "passed", False: "failed", None: "unjudged"}
    per_source = _write_samples(ctx, items, results, lambda s: labels[s.quality])
    ctx.stats.extra["per_source"] = _plain(per_source)


# -- route / preference -----------------------------------------------------------------------
class RouteParams(StageParams):
    input: Refs = Field(None, description="CoTSamples (default: the run's)")
    items: Refs = Field(None, description="QAItems (default: the run's)")
    sft_per_item: int = Field(1, ge=1, description="passing samples kept per question")
    require_quality: bool = Field(True, description="SFT needs a round-2 pass (not just unjudged)")


@stage(RouteParams, inputs=_SAMPLES, outputs={"sft": "sft", "rl": "rl"})
def route(ctx: StageContext, params: RouteParams) -> None:
    """Both rounds passed -> output ``sft`` (SFTRecord); otherwise -> output ``rl`` (RLRecord).

    Example: ``{stage: route, params: {sft_per_item: 1}}``
    """
    items = list(ctx.input("items", params.items))
    samples = list(ctx.input("input", params.input))
    options = params.model_dump(include={"sft_per_item", "require_quality"})
    per_source = _tally()
    for r in ctx.count(route_items(items, samples, lang=ctx.lang, **options)):
        ctx.output("sft").write_all(r.sft)
        if r.rl is not None:
            ctx.output("rl").write(r.rl)
        per_source[r.item.source][r.reason] += 1
    ctx.stats.extra["per_source"] = _plain(per_source)
    known = {it.qa_id for it in items}
    for s in samples:  # samples of items that are not in `items`: reported, not dropped silently
        if s.qa_id not in known:
            detail = f"qa_id {s.qa_id} is not among the items"
            ctx.fail(Failure(stage=ctx.key, item_id=s.sample_id, reason="unknown_item",
                             detail=detail), item=False)  # fmt: skip


class PreferenceParams(StageParams):
    input: Refs = Field(None, description="CoTSamples (default: the run's)")
    items: Refs = Field(None, description="QAItems (default: the run's)")
    length_ratio: float = Field(2.0, gt=1, description="overlong: longer than this x chosen")
    repetition_threshold: float = Field(0.3, gt=0, lt=1, description="repeated n-gram rate")
    ngram: int = Field(4, ge=1)
    max_pairs: int = Field(2, ge=1, description="pairs per question at most")


@stage(PreferenceParams, inputs=_SAMPLES, outputs={"": "dpo"})
def preference(ctx: StageContext, params: PreferenceParams) -> None:
    """DPO pairs: verified-correct vs wrong / overlong / repetitive samples of each question.

    Example: ``{stage: preference, params: {length_ratio: 2.0, max_pairs: 2}}``
    """
    options = PairOptions(**params.model_dump(exclude={"input", "items"}))
    items, samples = ctx.input("items", params.items), ctx.input("input", params.input)
    per_source, rejected = _tally(), Counter[str]()
    for result in ctx.count(preference_pairs(items, samples, options, lang=ctx.lang)):
        per_source[result.item.source][result.reason] += 1
        per_source[result.item.source]["pairs"] += len(result.pairs)
        for pair in result.pairs:
            rejected[pair.rejected_reason.split(",")[0].split(":")[0]] += 1
            ctx.output().write(pair)
    ctx.stats.extra.update(per_source=_plain(per_source), rejected_by=dict(rejected))
