"""Reasoning stages (Fin-R1 CoT pipeline, "LLMs Meet Finance" labels): thin adapters.

``qa_source`` -> QAItem; ``synthesize`` Passage -> QAItem; ``distill`` QAItem -> CoTSample;
``verify`` (round 1) and ``judge_reasoning`` (round 2) fill ``correct`` / ``quality``;
``route`` -> outputs ``sft`` (SFTRecord) and ``rl`` (RLRecord); ``preference`` -> DPORecord;
``annotate`` texts -> SFTRecord. Per-source counts and reasons go to ``stats.extra``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Literal

from pydantic import Field

from fingen.llm.tasks import TaskResult
from fingen.reasoning.answer_judge import SamplePair, judge_answers, rule_check
from fingen.reasoning.distill import DEFAULT_TEMPERATURE, distill_samples
from fingen.reasoning.judge import judge_reasoning as judge_reasoning_pairs
from fingen.reasoning.mapped import FieldMapping, load_csv, load_hf_dataset, load_jsonl
from fingen.reasoning.preference import PairOptions, preference_pairs
from fingen.reasoning.route import route_items
from fingen.reasoning.sources import LOADERS
from fingen.reasoning.synthesize import SynthSource, synthesize_items
from fingen.records import CoTSample, Failure, Passage, QAItem
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

Tally = defaultdict[str, Counter[str]]


def _tally() -> Tally:
    return defaultdict(Counter)


def _plain(table: Tally) -> dict[str, dict[str, int]]:
    return {k: dict(v) for k, v in sorted(table.items())}


def _ok(ctx: StageContext) -> None:
    ctx.stats.inputs += 1
    ctx.stats.succeeded += 1


def _failed(ctx: StageContext, failure: Failure) -> None:
    ctx.stats.inputs += 1
    ctx.fail(failure.model_copy(update={"stage": ctx.key}))


# -- qa_source --------------------------------------------------------------------------------
class QASourceParams(StageParams):
    source: Literal["finqa", "tatqa", "convfinqa", "jsonl", "csv", "hf"]
    path: str = Field(description="file, or for hf a hub name / save_to_disk folder")
    name: str | None = Field(None, description="QAItem.source (default: the source type)")
    split: str | None = Field(None, description="hf split (default: every split)")
    fields: FieldMapping | None = Field(None, description="column mapping for jsonl/csv/hf")
    limit: int | None = Field(None, ge=1, description="keep at most this many items")
    skip: int = Field(0, ge=0, description="skip this many items first")


def _qa_rows(ctx: StageContext, params: QASourceParams) -> Iterator[QAItem | Failure]:
    path = str(ctx.config.resolve_path(params.path))
    name, mapping = params.name or params.source, params.fields or FieldMapping()
    if params.source in LOADERS:
        return LOADERS[params.source](path, source=name)
    if params.source == "hf":
        return load_hf_dataset(path, mapping, split=params.split, source=name)
    return (load_jsonl if params.source == "jsonl" else load_csv)(path, mapping, source=name)


@stage(QASourceParams)
def qa_source(ctx: StageContext, params: QASourceParams) -> None:
    """Load QA items (FinQA, TAT-QA, ConvFinQA, JSONL/CSV/HF with a field mapping).

    Example: ``{stage: qa_source, params: {source: finqa, path: dev.json, limit: 20}}``
    """
    seen: set[str] = set()
    skipped, types, bar, out = 0, Counter[str](), ctx.progress("items"), ctx.output()
    for row in _qa_rows(ctx, params):
        if params.limit is not None and ctx.stats.succeeded >= params.limit:
            break
        if isinstance(row, Failure):
            _failed(ctx, row)
        elif skipped < params.skip:
            skipped += 1
        elif row.qa_id in seen:
            _failed(ctx, Failure(stage=ctx.key, item_id=row.qa_id, reason="duplicate"))
        else:
            seen.add(row.qa_id)
            out.write(row)
            _ok(ctx)
            types[f"{row.source}:{row.answer_type}"] += 1
            bar.advance()
    ctx.stats.extra["answer_types"] = dict(types)


# -- synthesize -------------------------------------------------------------------------------
class SynthesizeParams(StageParams):
    input: str = "chunk"
    n: int = Field(2, ge=1, le=20, description="questions asked per passage")
    min_chars: int = Field(200, ge=0, description="shorter passages are skipped (too_short)")
    require_grounded: bool = Field(True, description="program numbers must occur in the text")
    name: str = Field("synthesize", description="QAItem.source")
    limit: int | None = Field(None, ge=1, description="passages used at most")


def _synth_sources(ctx: StageContext, params: SynthesizeParams) -> list[SynthSource]:
    """Passages long enough to ask about (read here, before any request: items are pulled on
    the engine's thread, so nothing there may touch the stage's counters)."""
    sources = []
    for passage in ctx.read(params.input, Passage):
        if params.limit is not None and len(sources) >= params.limit:
            break
        size = len(passage.text.strip())
        if size < params.min_chars:
            detail = f"{size} < {params.min_chars} chars"
            _failed(ctx, Failure(stage=ctx.key, item_id=passage.passage_id, reason="too_short",
                                 detail=detail))  # fmt: skip
        else:
            sources.append(SynthSource.from_passage(passage, source=params.name))
    return sources


@stage(SynthesizeParams)
def synthesize(ctx: StageContext, params: SynthesizeParams) -> None:
    """Passages -> QAItems whose FinQA programs execute to the stated answers.

    Example: ``{stage: synthesize, params: {input: chunk, n: 2}}``
    """
    sources, out, types = _synth_sources(ctx, params), ctx.output(), Counter[str]()
    options = {"lang": ctx.lang, "n": params.n, "require_grounded": params.require_grounded}
    results = synthesize_items(sources, ctx.llm(), **options)
    for item in ctx.collect(results, ctx.progress("passages")):
        out.write(item)
        types[item.answer_type] += 1
    ctx.stats.extra["questions"] = sum(types.values())
    ctx.stats.extra["answer_types"] = dict(types)


# -- distill ----------------------------------------------------------------------------------
class DistillParams(StageParams):
    input: str = "qa_source"
    n: int = Field(4, ge=1, le=64, description="teacher samples per question")
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, description="default: llm.max_tokens")
    seed: int | None = Field(None, description="sample i uses seed + i")
    top_p: float | None = Field(None, gt=0, le=1)
    limit: int | None = Field(None, ge=1, description="questions used at most")


@stage(DistillParams)
def distill(ctx: StageContext, params: DistillParams) -> None:
    """n teacher samples per QAItem (Fin-R1: no system prompt, T=0.6, \\boxed{} answer).

    Example: ``{stage: distill, params: {n: 4, max_tokens: 2048}}``
    """
    items = list(ctx.read(params.input, QAItem))[: params.limit]
    source = {it.qa_id: it.source for it in items}
    options = params.model_dump(include={"temperature", "max_tokens", "seed", "top_p"})
    results = distill_samples(items, ctx.llm(), n=params.n, lang=ctx.lang, **options)
    per_source, out = _tally(), ctx.output()
    for sample in ctx.collect(results, ctx.progress("samples", len(items) * params.n)):
        out.write(sample)
        tally = per_source[source[sample.qa_id]]
        tally["samples"] += 1
        tally["truncated"] += sample.finish_reason == "length"
        tally["no_answer"] += sample.answer is None
    ctx.stats.extra["per_source"] = _plain(per_source)


# -- verify / judge_reasoning ------------------------------------------------------------------
def _judged(
    ctx: StageContext, results: Iterable[TaskResult]
) -> Iterator[tuple[QAItem, CoTSample, bool]]:
    """(item, sample, judged) per result; a failed judgement keeps the sample as it was and
    counts the failure as a rejected row."""
    for result in results:
        _ok(ctx)
        for f in result.failures:
            ctx.fail(f.model_copy(update={"stage": ctx.key}), item=False)
        for sample in result.records if result.ok else [result.item.sample]:
            yield result.item.item, sample, result.ok


def _pairs(ctx: StageContext, items_ref: str, input_ref: str) -> Iterator[SamplePair]:
    items = {item.qa_id: item for item in ctx.read(items_ref, QAItem)}
    for sample in ctx.read(input_ref, CoTSample):
        if sample.qa_id in items:
            yield SamplePair(items[sample.qa_id], sample)
        else:
            detail = f"qa_id {sample.qa_id} not in {items_ref}"
            _failed(ctx, Failure(stage=ctx.key, item_id=sample.sample_id, reason="unknown_item",
                                 detail=detail))  # fmt: skip


class VerifyParams(StageParams):
    input: str = "distill"
    items: str = "qa_source"
    judge: bool = Field(True, description="ask the LLM answer judge when the rules cannot decide")


@stage(VerifyParams)
def verify(ctx: StageContext, params: VerifyParams) -> None:
    """Round 1: answer check by rules, then an LLM judge (0/1) for what the rules leave open.

    Example: ``{stage: verify, params: {input: distill, judge: true}}``
    """
    per_source, methods, out = _tally(), Counter[str](), ctx.output()
    labels = {True: "correct", False: "wrong", None: "undecided"}
    undecided: list[SamplePair] = []
    for item, sample in _pairs(ctx, params.items, params.input):
        checked, verdict = rule_check(item, sample)
        if verdict.correct is None and params.judge:
            undecided.append(SamplePair(item, checked))
            continue
        _ok(ctx)
        out.write(checked)
        per_source[item.source][labels[checked.correct]] += 1
        methods[verdict.method.split(":")[0]] += 1
    results = judge_answers(undecided, ctx.llm(), lang=ctx.lang) if undecided else []
    for item, sample, judged in _judged(ctx, results):
        out.write(sample)
        per_source[item.source][labels[sample.correct]] += 1
        methods["llm_judge" if judged else "llm_judge_failed"] += 1
    ctx.stats.extra.update(per_source=_plain(per_source), methods=dict(methods))


class JudgeReasoningParams(StageParams):
    input: str = "verify"
    items: str = "qa_source"
    domain: str | None = Field(None, description='task domain (default "finance" / "金融")')
    min_passed: int = Field(7, ge=1, le=7, description="criteria that must score 1")
    only_correct: bool = Field(True, description="judge only samples with a correct answer")
    max_reasoning_chars: int = Field(16000, ge=1000)


@stage(JudgeReasoningParams)
def judge_reasoning(ctx: StageContext, params: JudgeReasoningParams) -> None:
    """Round 2: the reasoning scored 0/1 on Fin-R1's seven criteria (``quality``).

    Example: ``{stage: judge_reasoning, params: {domain: corporate finance}}``
    """
    per_source, out = _tally(), ctx.output()
    pending: list[SamplePair] = []
    for pair in _pairs(ctx, params.items, params.input):
        sample = pair.sample
        if sample.finish_reason == "length" or (params.only_correct and not sample.correct):
            _ok(ctx)
            out.write(sample)
            per_source[pair.item.source]["skipped"] += 1
        else:
            pending.append(pair)
    options = params.model_dump(include={"domain", "min_passed", "max_reasoning_chars"})
    results = judge_reasoning_pairs(pending, ctx.llm(), lang=ctx.lang, **options) if pending else []
    labels = {True: "passed", False: "failed", None: "judge_failed"}
    for item, sample, _ in _judged(ctx, results):
        out.write(sample)
        per_source[item.source][labels[sample.quality]] += 1
    ctx.stats.extra["per_source"] = _plain(per_source)


# -- route / preference -----------------------------------------------------------------------
class RouteParams(StageParams):
    input: str = "judge_reasoning"
    items: str = "qa_source"
    sft_per_item: int = Field(1, ge=1, description="passing samples kept per question")
    require_quality: bool = Field(True, description="SFT needs a round-2 pass (not just unjudged)")


@stage(RouteParams)
def route(ctx: StageContext, params: RouteParams) -> None:
    """Both rounds passed -> output ``sft`` (SFTRecord); otherwise -> output ``rl`` (RLRecord).

    Example: ``{stage: route, params: {sft_per_item: 1}}``
    """
    sft, rl, per_source = ctx.output("sft"), ctx.output("rl"), _tally()
    items = list(ctx.read(params.items, QAItem))
    samples = list(ctx.read(params.input, CoTSample))
    options = params.model_dump(include={"sft_per_item", "require_quality"})
    for r in route_items(items, samples, lang=ctx.lang, **options):
        _ok(ctx)
        sft.write_all(r.sft)
        if r.rl is not None:
            rl.write(r.rl)
        per_source[r.item.source][r.reason] += 1
    known = {it.qa_id for it in items}
    ctx.stats.extra["per_source"] = _plain(per_source)
    for s in samples:  # samples of items that are not in `items`: reported, not dropped silently
        if s.qa_id not in known:
            ctx.fail(
                Failure(
                    stage=ctx.key,
                    item_id=s.sample_id,
                    reason="unknown_item",
                    detail=f"qa_id {s.qa_id} is not in '{params.items}'",
                ),
                item=False,
            )


class PreferenceParams(StageParams):
    input: str = "judge_reasoning"
    items: str = "qa_source"
    length_ratio: float = Field(2.0, gt=1, description="overlong: longer than this x chosen")
    repetition_threshold: float = Field(0.3, gt=0, lt=1, description="repeated n-gram rate")
    ngram: int = Field(4, ge=1)
    max_pairs: int = Field(2, ge=1, description="pairs per question at most")


@stage(PreferenceParams)
def preference(ctx: StageContext, params: PreferenceParams) -> None:
    """DPO pairs: verified-correct vs wrong / overlong / repetitive samples of each question.

    Example: ``{stage: preference, params: {length_ratio: 2.0, max_pairs: 2}}``
    """
    options = PairOptions(**params.model_dump(exclude={"input", "items"}))
    items, samples = ctx.read(params.items, QAItem), ctx.read(params.input, CoTSample)
    per_source, rejected, out = _tally(), Counter[str](), ctx.output()
    for result in preference_pairs(items, samples, options, lang=ctx.lang):
        _ok(ctx)
        per_source[result.item.source][result.reason] += 1
        per_source[result.item.source]["pairs"] += len(result.pairs)
        for pair in result.pairs:
            rejected[pair.rejected_reason.split(",")[0].split(":")[0]] += 1
            out.write(pair)
    ctx.stats.extra.update(per_source=_plain(per_source), rejected_by=dict(rejected))
