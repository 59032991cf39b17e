"""Relevance stages: ``mine`` (indirect positives), ``filter``, ``hard_negatives``.

Typical order: ... -> bottom_up -> top_down -> mine -> filter -> hard_negatives -> export.
Inputs default to the stages of the pipeline that come before (see ``resolve_sources``);
name them explicitly with ``queries: [...]``, ``qrels: [...]`` (refs like ``bottom_up.queries``).
Outputs::

    mine.qrels.jsonl         mined positives (kind "mined", score >= threshold, judge, rationale)
    mine.negatives.jsonl     verified negatives (kind "negative", score 0)
    mine.partial.jsonl       0 < score < threshold (threshold 2 only): neither; never a negative
    filter.jsonl             kept queries; filter.qrels.jsonl / filter.partial.jsonl their labels
    hard_negatives.jsonl     HardNegatives {query_id, positive_ids, negative_ids, sources, scores}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from fingen.errors import ConfigError
from fingen.records import Failure, Passage, Qrel, Query, QueryLevel
from fingen.retrieval.filters import filter_queries as run_filters
from fingen.retrieval.judges import Judge, build_judge
from fingen.retrieval.mining import gather_candidates, judge_candidates, labeled_pairs
from fingen.retrieval.negatives import HardNegativeConfig, HardNegatives
from fingen.retrieval.negatives import hard_negatives as mine_hn
from fingen.stages.base import StageContext, StageParams, stage

__all__ = [
    "FilterParams",
    "HardNegativesParams",
    "MineParams",
    "Sources",
    "filter_queries",
    "hard_negatives",
    "mine",
    "read_refs",
    "resolve_sources",
    "upstream",
]

_GENERATORS = ("bottom_up", "top_down")


class SourceParams(StageParams):
    passages: str = Field("chunk", description="stage output holding the Passages")
    queries: list[str] | None = Field(None, description="query refs (default: upstream stages)")
    qrels: list[str] | None = Field(None, description="label refs (default: upstream stages)")
    partial: list[str] | None = Field(None, description="refs of partial (below-threshold) labels")


@dataclass
class Sources:
    queries: list[str]
    qrels: list[str]
    partial: list[str] = field(default_factory=list)


def upstream(ctx: StageContext, types: tuple[str, ...]) -> list[str]:
    """Keys of the stages of the given types that come before this one in the pipeline."""
    keys: list[str] = []
    for sc in ctx.config.stages:
        if sc.key == ctx.key:
            break
        if sc.stage in types:
            keys.append(sc.key)
    return keys


def resolve_sources(ctx: StageContext, params: SourceParams) -> Sources:
    """Queries and labels to read: the last ``filter`` (plus ``mine`` stages after it), else
    the query generators' outputs plus every earlier ``mine`` stage."""
    order = [sc.key for sc in ctx.config.stages]
    filters = upstream(ctx, ("filter",))
    mines = upstream(ctx, ("mine",))
    if filters:
        last = filters[-1]
        mines = [m for m in mines if order.index(m) > order.index(last)]
        src = Sources([last], [f"{last}.qrels"], [f"{last}.partial"])
    else:
        gens = upstream(ctx, _GENERATORS)
        src = Sources(
            [f"{g}.queries" for g in gens],
            [f"{g}.{name}" for g in gens for name in ("qrels", "negatives")],
        )
    src.qrels += [f"{m}.{name}" for m in mines for name in ("qrels", "negatives")]
    src.partial += [f"{m}.partial" for m in mines]
    if params.queries is not None:
        src.queries = list(params.queries)
    if params.qrels is not None:
        src.qrels = list(params.qrels)
    if params.partial is not None:
        src.partial = list(params.partial)
    if not src.queries:
        raise ConfigError(
            "no query source: run bottom_up/top_down (or filter) before this stage, "
            "or name them in 'queries' (e.g. [bottom_up.queries])",
            where=f"stages.{ctx.key}.params",
        )
    return src


def read_refs(ctx: StageContext, refs: list[str], model: type, *, required: bool) -> Iterator:
    """Records of every ref in order; a missing optional ref (e.g. no negatives) is skipped."""
    for ref in refs:
        stage_key, _, output = ref.partition(".")
        if not required and not ctx.store.stage_path(stage_key, output).is_file():
            continue
        yield from ctx.read(ref, model)


def _inputs(ctx: StageContext, params: SourceParams) -> tuple[Sources, list[Query], list[Qrel]]:
    src = resolve_sources(ctx, params)
    queries = list(read_refs(ctx, src.queries, Query, required=True))
    qrels = list(read_refs(ctx, src.qrels, Qrel, required=params.qrels is not None))
    return src, queries, qrels


# --- mine -----------------------------------------------------------------------------------


class MineParams(SourceParams):
    levels: list[QueryLevel] = Field(["sentence", "passage"], description="query levels mined")
    local: bool = Field(True, description="candidates: other passages of the source documents")
    global_top_k: int = Field(10, ge=0, description="candidates: embedder top-k over the corpus")
    max_candidates: int = Field(20, ge=1, description="judged per query, most similar first")
    judge: Literal["llm", "cross_encoder"] = "llm"
    cross_encoder: str | None = Field(None, description="CrossEncoder model path (judge)")
    ce_threshold: float = Field(0.5, description="cross-encoder score graded 2 (relevant)")
    ce_partial_threshold: float | None = Field(None, description="score graded 1, if set")
    threshold: int = Field(1, ge=1, le=2, description="lowest grade that makes a positive")
    limit: int | None = Field(None, ge=1, description="mine only the first N queries")


@stage(MineParams)
def mine(ctx: StageContext, params: MineParams) -> None:
    """Judge each query's local and global candidates; grade >= threshold -> mined qrel.

    Example params: ``{global_top_k: 10, max_candidates: 20, judge: llm, threshold: 1}``
    """
    _, queries, qrels = _inputs(ctx, params)
    passages = list(ctx.read(params.passages, Passage))
    todo = [q for q in queries if q.level in params.levels][: params.limit]
    judge: Judge = build_judge(
        params.judge,
        llm=ctx.llm() if params.judge == "llm" else None,
        lang=ctx.lang,
        model=params.cross_encoder,
        threshold=params.ce_threshold,
        partial_threshold=params.ce_partial_threshold,
        device=ctx.config.embedder.device,
    )
    for name in ("qrels", "negatives", "partial"):
        ctx.output(name)  # the files exist even when nothing was mined
    candidates = gather_candidates(
        todo,
        passages,
        labeled=labeled_pairs(qrels),
        local=params.local,
        global_top_k=params.global_top_k,
        max_candidates=params.max_candidates,
        embedder=ctx.embedder() if todo and passages else None,
    )
    bar = ctx.progress("candidates")
    sources: Counter[str] = Counter()
    found: Counter[str] = Counter()
    grades: Counter[str] = Counter()
    mined_queries: set[str] = set()
    out = {"positive": "qrels", "negative": "negatives", "partial": "partial"}
    for res in judge_candidates(candidates, judge, threshold=params.threshold):
        ctx.stats.inputs += 1
        bar.advance()
        sources[res.verdict.candidate.source] += 1
        ctx.stats.cached += int(res.verdict.cached)
        if isinstance(res.record, Failure):
            ctx.fail(res.record.model_copy(update={"stage": ctx.key}))
            continue
        ctx.stats.succeeded += 1
        grades[str(res.record.score)] += 1
        if res.outcome == "positive":
            found[res.verdict.candidate.source] += 1
            mined_queries.add(res.record.query_id)
        ctx.output(out[res.outcome]).write(res.record)
    ctx.stats.extra.update(
        judge=judge.name,
        queries=len(todo),
        skipped_levels=len(queries) - len([q for q in queries if q.level in params.levels]),
        candidates_by_source=dict(sources),
        grades=dict(sorted(grades.items())),
        positives_by_source=dict(found),
        queries_with_mined=len(mined_queries),
    )


# --- filter ---------------------------------------------------------------------------------


class FilterParams(SourceParams):
    dedup: bool = Field(True, description="drop near-duplicate queries")
    dedup_embedding: bool = Field(True, description="also compare query embeddings")
    dedup_threshold: float = Field(0.95, gt=0, le=1, description="cosine of near-duplicates")
    round_trip: bool = Field(False, description="keep queries whose source is in the top-k")
    round_trip_k: int = Field(10, ge=1)


@stage(FilterParams)
def filter_queries(ctx: StageContext, params: FilterParams) -> None:
    """Near-duplicate and round-trip filters; kept queries and their labels pass through.

    Example params: ``{dedup_threshold: 0.95, round_trip: true, round_trip_k: 20}``
    """
    src, queries, qrels = _inputs(ctx, params)
    partial = list(read_refs(ctx, src.partial, Qrel, required=params.partial is not None))
    passages = list(ctx.read(params.passages, Passage)) if params.round_trip else []
    needs_embedder = params.round_trip or (params.dedup and params.dedup_embedding)
    result = run_filters(
        queries,
        passages,
        qrels,
        embedder=ctx.embedder() if needs_embedder and queries else None,
        dedup=params.dedup,
        dedup_threshold=params.dedup_threshold if params.dedup_embedding else 2.0,
        round_trip_k=params.round_trip_k if params.round_trip else None,
        stage=ctx.key,
    )
    ctx.stats.inputs = len(queries)
    ctx.stats.succeeded = len(result.kept)
    for failure in result.failures:
        ctx.fail(failure)
    keep = {q.query_id for q in result.kept}
    ctx.output().write_all(result.kept)
    dropped = Counter[str]()
    for name, labels in (("qrels", qrels), ("partial", partial)):
        writer = ctx.output(name)
        for r in labels:
            if r.query_id in keep:
                writer.write(r)
            else:
                dropped[name] += 1
    ctx.stats.extra.update(
        filters={
            "near_duplicate": result.counts["near_duplicate"],
            "round_trip_failed": result.counts["round_trip_failed"],
        },
        round_trip_unchecked=result.unchecked,
        labels_dropped=dict(dropped),
    )


# --- hard negatives ---------------------------------------------------------------------------


class HardNegativesParams(SourceParams):
    range_min: int = Field(10, ge=0, description="first rank considered (0-based)")
    range_max: int = Field(100, ge=1, description="ranks below this are considered")
    absolute_margin: float | None = Field(None, description="neg <= pos - margin")
    relative_margin: float | None = Field(0.05, ge=0, lt=1, description="neg <= pos*(1-r)")
    max_score: float | None = None
    num_negatives: int = Field(15, ge=1)
    sampling: Literal["top", "random"] = "top"
    seed: int = 42
    use_verified: bool = Field(True, description="verified negatives from mining first")
    min_positive_score: int = Field(1, ge=1, le=2)
    index: Literal["auto", "exact", "faiss"] = "auto"


@stage(HardNegativesParams)
def hard_negatives(ctx: StageContext, params: HardNegativesParams) -> None:
    """Per query: positives + hard negatives from the embedder's ranking (never a positive).

    Example params: ``{range_min: 10, range_max: 100, relative_margin: 0.05, num_negatives: 15}``
    """
    from fingen.embed.index import build_index

    src, queries, qrels = _inputs(ctx, params)
    qrels += list(read_refs(ctx, src.partial, Qrel, required=params.partial is not None))
    passages = list(ctx.read(params.passages, Passage))
    config = HardNegativeConfig(
        **params.model_dump(
            include={"range_min", "range_max", "absolute_margin", "relative_margin", "max_score"}
            | {"num_negatives", "sampling", "seed", "use_verified"}
        )
    )
    ctx.stats.inputs = len(queries)
    embedder = ctx.embedder() if queries and passages else None
    vectors = index = None
    if embedder is not None:
        vectors = embedder.encode([p.text for p in passages], kind="passage")
        index = build_index(vectors, params.index)
    sources: Counter[str] = Counter()
    short = 0
    records = (
        mine_hn(
            queries,
            passages,
            qrels,
            embedder=embedder,
            config=config,
            min_positive_score=params.min_positive_score,
            passage_vectors=vectors,
            index=index,
            stage=ctx.key,
        )
        if embedder is not None
        else (Failure(stage=ctx.key, item_id=q.query_id, reason="no_passages") for q in queries)
    )
    for rec in records:
        if isinstance(rec, HardNegatives):
            ctx.stats.succeeded += 1
            sources.update(rec.sources)
            short += int(len(rec.negative_ids) < params.num_negatives)
            ctx.output().write(rec)
        else:
            ctx.fail(rec)
    ctx.output()
    ctx.stats.extra.update(negatives_by_source=dict(sources), fewer_than_asked=short)
