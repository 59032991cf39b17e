"""Relevance stages: ``mine`` (indirect positives), ``filter``, ``hard_negatives``.

Typical order: ... -> bottom_up -> top_down -> mine -> filter -> hard_negatives -> export.
Inputs default to the run's records so far (the queries and labels of every earlier
generator and mining stage, or what the last ``filter`` kept, plus mining after it); name
them explicitly with ``queries: [...]``, ``qrels: [...]`` (refs like ``bottom_up.queries``).
Labels keep their 0-2 grade; ``relevance.min_positive`` decides positives (``fingen.labels``).
Outputs::

    mine.qrels.jsonl         every verdict: kind "mined", the judge's grade 0-2, judge, rationale
    filter.jsonl             kept queries; filter.qrels.jsonl their labels
    hard_negatives.jsonl     HardNegatives {query_id, positive_ids, negative_ids, sources, scores}
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from fingen.records import Failure, QueryLevel
from fingen.retrieval.filters import filter_queries as run_filters
from fingen.retrieval.judges import build_judge
from fingen.retrieval.mining import MineOptions, mine_positives
from fingen.retrieval.negatives import HardNegativeConfig, hard_negatives_for_run
from fingen.stages.base import StageContext, StageParams, stage

__all__ = [
    "FilterParams",
    "HardNegativesParams",
    "MineParams",
    "SourceParams",
    "filter_queries",
    "hard_negatives",
    "mine",
]

Refs = str | list[str] | None
_LABEL_INPUTS = {"passages": "passage", "queries": "query", "qrels": "qrel?"}


class SourceParams(StageParams):
    passages: Refs = Field(None, description="Passages (default: the run's)")
    queries: Refs = Field(None, description="Queries (default: the run's so far)")
    qrels: Refs = Field(None, description="labels (default: the run's so far)")


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
    limit: int | None = Field(None, ge=1, description="mine only the first N queries")


@stage(
    MineParams,
    inputs=_LABEL_INPUTS,
    outputs={"qrels": "qrel"},
    role="judge",
    judges="query",
)
def mine(ctx: StageContext, params: MineParams) -> None:
    """Judge each query's local and global candidates; every verdict is a mined label 0-2.

    Example params: ``{global_top_k: 10, max_candidates: 20, judge: llm}``
    """
    judge = build_judge(
        params.judge,
        llm=ctx.llm() if params.judge == "llm" else None,
        lang=ctx.lang,
        model=params.cross_encoder,
        threshold=params.ce_threshold,
        partial_threshold=params.ce_partial_threshold,
        device=ctx.config.embedder.device,
    )
    options = MineOptions(
        levels=tuple(params.levels), local=params.local, global_top_k=params.global_top_k,
        max_candidates=params.max_candidates, limit=params.limit,
        threshold=ctx.config.relevance.min_positive,
    )  # fmt: skip
    outcomes = mine_positives(
        ctx.input("queries", params.queries),
        list(ctx.input("passages", params.passages)),
        ctx.input("qrels", params.qrels),
        judge=judge,
        embedder=ctx.embedder(),
        options=options,
    )
    bar = ctx.progress("candidates")
    sources, found, grades = Counter[str](), Counter[str](), Counter[str]()
    mined_queries: set[str] = set()
    outcomes_by_kind = Counter[str]()
    for res in outcomes:
        ctx.stats.inputs += 1
        bar.advance()
        sources[res.verdict.candidate.source] += 1
        ctx.stats.cached += int(res.verdict.cached)
        if isinstance(res.record, Failure):
            ctx.fail(res.record)
            continue
        ctx.stats.succeeded += 1
        grades[str(res.record.score)] += 1
        outcomes_by_kind[res.outcome] += 1
        if res.outcome == "positive":
            found[res.verdict.candidate.source] += 1
            mined_queries.add(res.record.query_id)
        ctx.output("qrels").write(res.record)
    ctx.stats.extra.update(
        judge=judge.name,
        outcomes=dict(outcomes_by_kind),
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


@stage(
    FilterParams,
    inputs={**_LABEL_INPUTS, "passages": "passage?"},
    outputs={"": "query:replace", "qrels": "qrel:replace"},
)
def filter_queries(ctx: StageContext, params: FilterParams) -> None:
    """Near-duplicate and round-trip filters; kept queries and their labels pass through.

    Example params: ``{dedup_threshold: 0.95, round_trip: true, round_trip_k: 20}``
    """
    queries = list(ctx.input("queries", params.queries))
    qrels = list(ctx.input("qrels", params.qrels))
    passages = list(ctx.input("passages", params.passages)) if params.round_trip else []
    result = run_filters(
        queries,
        passages,
        qrels,
        embedder=ctx.embedder(),
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
    dropped = 0
    for r in qrels:
        if r.query_id in keep:
            ctx.output("qrels").write(r)
        else:
            dropped += 1
    checked = len(queries) - result.counts["near_duplicate"] - result.unchecked
    ctx.stats.extra.update(
        round_trip_pass_rate=(
            round(1 - result.counts["round_trip_failed"] / checked, 4)
            if params.round_trip and checked
            else None
        ),
        filters={
            "near_duplicate": result.counts["near_duplicate"],
            "round_trip_failed": result.counts["round_trip_failed"],
        },
        round_trip_unchecked=result.unchecked,
        labels_dropped=dropped,
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
    index: Literal["auto", "exact", "faiss"] = "auto"


@stage(HardNegativesParams, inputs=_LABEL_INPUTS, outputs={"": "hard_negatives"})
def hard_negatives(ctx: StageContext, params: HardNegativesParams) -> None:
    """Per query: positives + hard negatives from the embedder's ranking (never a positive).

    Example params: ``{range_min: 10, range_max: 100, relative_margin: 0.05, num_negatives: 15}``
    """
    config = HardNegativeConfig(
        **params.model_dump(
            include={"range_min", "range_max", "absolute_margin", "relative_margin", "max_score"}
            | {"num_negatives", "sampling", "seed", "use_verified"}
        )
    )
    queries = list(ctx.input("queries", params.queries))
    records = hard_negatives_for_run(
        queries,
        list(ctx.input("passages", params.passages)),
        ctx.input("qrels", params.qrels),
        embedder=ctx.embedder(),
        config=config,
        min_positive=ctx.config.relevance.min_positive,
        index=params.index,
    )
    sources, short = Counter[str](), 0
    for group in ctx.count(records):
        sources.update(group.sources)
        short += int(len(group.negative_ids) < params.num_negatives)
        ctx.output().write(group)
    ctx.stats.extra.update(negatives_by_source=dict(sources), fewer_than_asked=short)
