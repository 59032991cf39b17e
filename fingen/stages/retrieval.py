"""Retrieval-query stages: ``bottom_up``, ``titles``, ``topics``, ``top_down``.

Typical order: ingest -> chunk -> bottom_up -> titles -> topics -> top_down. Outputs::

    bottom_up.queries.jsonl / bottom_up.qrels.jsonl   sentence + passage queries, direct qrels
    titles.jsonl                                      every Document, untitled ones titled
    topics.jsonl / topics.clusters.jsonl              Documents with industry + period, clusters
    top_down.queries.jsonl / top_down.qrels.jsonl     grounded topic queries, judged qrels
    top_down.negatives.jsonl                          candidates the judge scored 0
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import Field

from fingen.records import Qrel, Query
from fingen.retrieval.bottom_up import bottom_up_queries
from fingen.retrieval.clusters import TopicOptions, cluster_documents
from fingen.retrieval.titles import title_documents
from fingen.retrieval.top_down import TopDownOptions, top_down_queries
from fingen.retrieval.topics import (
    ClusterKey,
    HdbscanSettings,
    OutlierStrategy,
    TopicMethod,
    UmapSettings,
)
from fingen.stages.base import StageContext, StageParams, stage

__all__ = [
    "BottomUpParams",
    "TitlesParams",
    "TopDownParams",
    "TopicsParams",
    "bottom_up",
    "titles",
    "top_down",
    "topics",
]

Refs = str | list[str] | None


class BottomUpParams(StageParams):
    passages: Refs = Field(None, description="Passages (default: the run's)")
    sentence_queries: int = Field(2, ge=0, le=20, description="sentence-level queries asked")
    passage_queries: int = Field(1, ge=0, le=20, description="passage-level queries asked")
    max_overlap: float = Field(0.8, gt=0, le=1, description="token-trigram copy cap")
    min_chars: int = Field(40, ge=0, description="shorter passages fail as 'too_short'")
    limit: int | None = Field(None, ge=1, description="use only the first N passages")
    template: str = "bottom_up"


def _label_output(rec: Any) -> str:
    return "queries" if isinstance(rec, Query) else "qrels"


@stage(
    BottomUpParams,
    inputs={"passages": "passage"},
    outputs={"queries": "query", "qrels": "qrel"},
)
def bottom_up(ctx: StageContext, params: BottomUpParams) -> None:
    """Passage -> sentence- and passage-level queries with direct qrels (score 1).

    Example params: ``{sentence_queries: 2, passage_queries: 1, limit: 100}``
    """
    passages = list(ctx.input("passages", params.passages))[: params.limit]
    options = params.model_dump(
        include={"sentence_queries", "passage_queries", "max_overlap", "min_chars", "template"}
    )
    results = bottom_up_queries(passages, ctx.llm(), lang=ctx.lang, **options)
    levels, origins = Counter[str](), Counter[str]()

    def where(rec: Any) -> str:
        if isinstance(rec, Query):
            levels[rec.level] += 1
            origins[rec.origin] += 1
        return _label_output(rec)

    ctx.route(ctx.collect(results, ctx.progress("passages", total=len(passages))), where)
    ctx.stats.extra.update(per_level=dict(levels), origin=dict(origins))


class TitlesParams(StageParams):
    documents: Refs = Field(None, description="Documents (default: the run's)")
    overwrite: bool = Field(False, description="regenerate titles that already exist")
    max_chars: int = Field(2000, ge=100, description="document text shown to the LLM")
    fallback: bool = Field(True, description="on failure, title from the first sentence")
    template: str = "title"


@stage(TitlesParams, inputs={"documents": "document"}, outputs={"": "document"})
def titles(ctx: StageContext, params: TitlesParams) -> None:
    """Every document passes through; untitled ones get an LLM-written title."""
    docs = ctx.input("documents", params.documents)
    results = title_documents(
        docs, ctx.llm(), overwrite=params.overwrite, fallback=params.fallback,
        lang=ctx.lang, max_chars=params.max_chars, template=params.template,
    )  # fmt: skip
    origins = Counter[str]()
    for doc in ctx.collect(results, ctx.progress("titles")):
        ctx.output().write(doc)
        origins[str(doc.meta.get("title_origin", "kept"))[:4]] += 1
    ctx.stats.extra.update(
        fallback=origins["lead"], kept=origins["kept"], generated=sum(origins.values())
        - origins["lead"] - origins["kept"],
    )  # fmt: skip


class TopicsParams(StageParams):
    documents: Refs = Field(None, description="titled Documents (default: the run's)")
    by: list[ClusterKey] = Field(["industry", "period", "topic"], min_length=1)
    granularity: Literal["quarter", "half", "year"] = "quarter"
    industry: Literal["metadata", "embedding", "llm"] = Field(
        "embedding", description="fill a missing Document.industry: not at all, or zero-shot"
    )
    taxonomy: dict[str, str] | None = Field(None, description="label -> description")
    min_similarity: float = Field(0.0, ge=-1, le=1, description="embedding zero-shot floor")
    method: TopicMethod = "auto"
    bertopic_min_docs: int = Field(40, ge=4)
    distance_threshold: float = Field(0.7, gt=0, lt=2, description="fallback cosine distance")
    outlier_threshold: float | None = Field(
        0.4, ge=0, le=1, description="BERTopic reduce_outliers threshold (None: keep outliers)"
    )
    outlier_strategy: OutlierStrategy | None = Field(
        None, description="reduce_outliers strategy (None: BERTopic's default, as Fin-TopicModel)"
    )
    umap: UmapSettings = Field(default_factory=UmapSettings, description="UMAP settings")
    hdbscan: HdbscanSettings = Field(
        default_factory=HdbscanSettings, description="HDBSCAN settings"
    )
    n_words: int = Field(8, ge=1, le=50)
    seed: int = 22


@stage(
    TopicsParams,
    inputs={"documents": "document"},
    outputs={"": "document", "clusters": "cluster"},
)
def topics(ctx: StageContext, params: TopicsParams) -> None:
    """Cluster documents by industry x time bucket x topic (BERTopic over title embeddings)."""
    fields = params.model_dump(exclude={"documents", "umap", "hdbscan"})
    options = TopicOptions(
        **{**fields, "by": tuple(params.by)}, umap=params.umap, hdbscan=params.hdbscan
    )
    result = cluster_documents(
        ctx.input("documents", params.documents),
        embedder=ctx.embedder(),
        lang=ctx.lang,
        options=options,
        llm=ctx.llm() if params.industry == "llm" else None,
    )
    ctx.stats.inputs = len(result.documents) + len(result.failures)
    ctx.stats.succeeded = len(result.documents)
    for f in result.failures:
        ctx.fail(f)
    for f in result.rejected:
        ctx.fail(f, item=False)
    ctx.output().write_all(result.documents)
    ctx.output("clusters").write_all(result.clusters)
    ctx.stats.extra.update(result.stats)


class TopDownParams(StageParams):
    clusters: Refs = Field(None, description="TopicClusters (default: the run's)")
    passages: Refs = Field(None, description="Passages (default: the run's)")
    min_size: int = Field(2, ge=1, description="smaller clusters are skipped")
    max_size: int = Field(8, ge=2, description="larger clusters are split evenly")
    queries: int = Field(3, ge=1, le=20, description="topic queries asked per cluster")
    min_docs: int = Field(2, ge=1, description="documents a query must name")
    max_overlap: float = Field(0.8, gt=0, le=1)
    excerpt_chars: int = Field(300, ge=0, description="lead text shown per document")
    top_k: int = Field(3, ge=1, le=50, description="candidate passages judged")
    per_document: bool = Field(True, description="top_k in each named document")
    min_score: int | None = Field(
        None,
        ge=1,
        le=2,
        description="judge grade that grounds a query (default: relevance.min_positive)",
    )
    limit: int | None = Field(None, ge=1, description="use only the first N clusters")
    template: str = "top_down"
    judge_template: str = "ground_judge"


@stage(
    TopDownParams,
    inputs={"clusters": "cluster", "passages": "passage"},
    outputs={"queries": "query", "qrels": "qrel"},
    judges="query",
)
def top_down(ctx: StageContext, params: TopDownParams) -> None:
    """Clusters -> topic-level cross-document queries, grounded by embedder + LLM judge."""
    fields = params.model_dump(exclude={"clusters", "passages", "min_score"})
    min_score = params.min_score or ctx.config.relevance.min_positive
    options = TopDownOptions(**fields, min_score=min_score)
    results = top_down_queries(
        ctx.input("clusters", params.clusters),
        ctx.input("passages", params.passages),
        ctx.llm(),
        embedder=ctx.embedder(),
        judge_llm=ctx.judge_llm(),
        lang=ctx.lang,
        options=options,
    )
    labels = list(ctx.collect(results, ctx.progress("clusters")))
    counts = ctx.route(labels, _label_output)
    scores = Counter(r.score for r in labels if isinstance(r, Qrel))
    ctx.stats.extra.update(
        grounded=counts["queries"],
        ungrounded=ctx.stats.failures["ungrounded"],
        judge_scores={str(k): v for k, v in sorted(scores.items())},
    )
