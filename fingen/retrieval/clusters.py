"""Topic clusters of documents (FinCPRG top-down input): industry x time bucket x topic.

``cluster_documents`` is the whole step: fill missing industries (zero-shot by embedding or
by the LLM, into a taxonomy), bucket dates, fit topics on the title embeddings
(``fingen.retrieval.topics``) and group the documents. Documents without a title cannot be
clustered and come back as failures (run ``title_documents`` first).

Example::

    result = cluster_documents(docs, embedder=emb, lang="en")
    result.clusters          # [TopicCluster(...)], largest first
    result.documents         # the titled documents with industry and meta period/topic/cluster_id
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fingen.llm.tasks import run_task
from fingen.records import Document, Failure, TopicCluster
from fingen.retrieval.taxonomies import (
    UNKNOWN_INDUSTRY,
    IndustryTask,
    classify_by_embedding,
    default_taxonomy,
    document_lead,
)
from fingen.retrieval.topics import (
    ClusterKey,
    Granularity,
    HdbscanSettings,
    OutlierStrategy,
    TopicMethod,
    UmapSettings,
    build_clusters,
    cluster_quality,
    fit_topics,
    time_bucket,
)

if TYPE_CHECKING:
    from fingen.embed.base import Embedder
    from fingen.llm.engine import LLMEngine

__all__ = ["Clustering", "TopicOptions", "cluster_documents", "fill_industries"]

IndustrySource = Literal["metadata", "embedding", "llm"]


@dataclass(frozen=True)
class TopicOptions:
    """How documents are clustered (defaults: Fin-TopicModel's settings where it has one).

    Args:
        by: the elements that define a cluster.
        granularity: time bucket of ``Document.date``.
        industry: fill a missing ``Document.industry`` not at all ("metadata") or zero-shot.
        taxonomy: label -> description (default: GICS for en, Shenwan L1 for zh).
        min_similarity: embedding zero-shot floor (below: "unknown").
        method / bertopic_min_docs / distance_threshold / outlier_threshold /
        outlier_strategy / umap / hdbscan / n_words / seed: see
        ``fingen.retrieval.topics.fit_topics`` (defaults: Fin-TopicModel's settings).
    """

    by: tuple[ClusterKey, ...] = ("industry", "period", "topic")
    granularity: Granularity = "quarter"
    industry: IndustrySource = "embedding"
    taxonomy: Mapping[str, str] | None = None
    min_similarity: float = 0.0
    method: TopicMethod = "auto"
    bertopic_min_docs: int = 40
    distance_threshold: float = 0.7
    outlier_threshold: float | None = 0.4
    outlier_strategy: OutlierStrategy | None = None
    umap: UmapSettings = field(default_factory=UmapSettings)
    hdbscan: HdbscanSettings = field(default_factory=HdbscanSettings)
    n_words: int = 8
    seed: int = 22


@dataclass
class Clustering:
    """What ``cluster_documents`` gives: clustered documents, clusters and what failed.

    ``failures`` are documents that could not be clustered (no title); ``rejected`` are
    failed industry classifications (the document is still clustered, as "unknown").
    """

    documents: list[Document] = field(default_factory=list)
    clusters: list[TopicCluster] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    rejected: list[Failure] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def fill_industries(
    docs: list[Document],
    options: TopicOptions,
    *,
    lang: str,
    embedder: Embedder | None,
    llm: LLMEngine | None,
    rejected: list[Failure],
) -> list[str]:
    """Each document's industry: its own, else zero-shot (see ``TopicOptions.industry``)."""
    known = [d.industry or "" for d in docs]
    missing = [i for i, v in enumerate(known) if not v]
    if not missing or options.industry == "metadata" or "industry" not in options.by:
        return [v or UNKNOWN_INDUSTRY for v in known]
    taxonomy = dict(options.taxonomy or default_taxonomy(lang))
    todo = [docs[i] for i in missing]
    if options.industry == "embedding":
        if embedder is None:
            raise ValueError("industry='embedding' needs an embedder")
        leads = [document_lead(d) for d in todo]
        labels = classify_by_embedding(
            leads, taxonomy, embedder, min_similarity=options.min_similarity
        )
    else:
        if llm is None:
            raise ValueError("industry='llm' needs an LLM engine")
        labels = []
        for res in run_task(IndustryTask(taxonomy, lang=lang), todo, llm):
            rejected.extend(res.failures)
            labels.append(res.records[0].industry if res.records else UNKNOWN_INDUSTRY)
    for i, label in zip(missing, labels, strict=True):
        known[i] = label or UNKNOWN_INDUSTRY
    return known


def cluster_documents(
    documents: Iterable[Document],
    *,
    embedder: Embedder | None,
    lang: str = "en",
    options: TopicOptions | None = None,
    llm: LLMEngine | None = None,
) -> Clustering:
    """Cluster documents by industry x time bucket x topic (BERTopic over title embeddings).

    Args:
        documents: titled documents (untitled ones fail as ``no_title``).
        embedder: embeds titles (and industry descriptions for the embedding zero-shot).
        lang: topic-word tokenizer and default taxonomy.
        options: see :class:`TopicOptions`.
        llm: only for ``industry="llm"``.
    """
    opts = options or TopicOptions()
    out = Clustering()
    docs: list[Document] = []
    for d in documents:
        if d.title.strip():
            docs.append(d)
        else:
            detail = "run the 'titles' stage first"
            out.failures.append(Failure(stage="topics", item_id=d.doc_id, reason="no_title",
                                        detail=detail))  # fmt: skip
    industries = fill_industries(
        docs, opts, lang=lang, embedder=embedder, llm=llm, rejected=out.rejected
    )
    periods = [time_bucket(d.date, opts.granularity) for d in docs]
    titles = [d.title for d in docs]
    if "topic" in opts.by and docs:
        if embedder is None:
            raise ValueError("topic clustering needs an embedder")
        emb = embedder.encode(titles, kind="query")
        labels, words, method = fit_topics(
            titles, emb, lang, method=opts.method, bertopic_min_docs=opts.bertopic_min_docs,
            distance_threshold=opts.distance_threshold, n_words=opts.n_words, seed=opts.seed,
            outlier_threshold=opts.outlier_threshold, outlier_strategy=opts.outlier_strategy,
            umap=opts.umap, hdbscan=opts.hdbscan,
        )  # fmt: skip
        quality = cluster_quality(emb, labels, words)
    else:
        labels, words, method, quality = [0] * len(docs), {}, "none", {}
    out.clusters = build_clusters(docs, labels, words, industries, periods, by=opts.by)
    member = {d: c.cluster_id for c in out.clusters for d in c.doc_ids}
    for d, ind, per, lab in zip(docs, industries, periods, labels, strict=True):
        meta = {**d.meta, "period": per, "topic": lab, "cluster_id": member.get(d.doc_id)}
        industry = d.industry or (None if ind == UNKNOWN_INDUSTRY else ind)
        out.documents.append(d.model_copy(update={"industry": industry, "meta": meta}))
    sizes = Counter(len(c.doc_ids) for c in out.clusters)
    out.stats = {
        "method": method,
        "clusters": len(out.clusters),
        "cluster_sizes": {str(k): v for k, v in sorted(sizes.items())},
        "industries": dict(Counter(industries).most_common()),
        "periods": dict(Counter(periods).most_common()),
        **quality,
    }
    return out
