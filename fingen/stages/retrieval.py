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
from typing import Literal

from pydantic import Field

from fingen.llm.tasks import run_task
from fingen.records import Document, Failure, Passage, Qrel, Query
from fingen.retrieval.bottom_up import BottomUpTask
from fingen.retrieval.taxonomies import (
    UNKNOWN_INDUSTRY,
    IndustryTask,
    classify_by_embedding,
    default_taxonomy,
    document_lead,
)
from fingen.retrieval.titles import TitleTask, lead_title
from fingen.retrieval.top_down import (
    GroundJudgeTask,
    TopDownTask,
    TopicItem,
    attach_grounding,
    rank_candidates,
    split_cluster,
)
from fingen.retrieval.topics import (
    ClusterKey,
    OutlierStrategy,
    TopicCluster,
    TopicMethod,
    build_clusters,
    cluster_quality,
    fit_topics,
    time_bucket,
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


class BottomUpParams(StageParams):
    passages: str = Field("chunk", description="stage output holding the Passages")
    sentence_queries: int = Field(2, ge=0, le=20, description="sentence-level queries asked")
    passage_queries: int = Field(1, ge=0, le=20, description="passage-level queries asked")
    max_overlap: float = Field(0.8, gt=0, le=1, description="token-trigram copy cap")
    min_chars: int = Field(40, ge=0, description="shorter passages fail as 'too_short'")
    limit: int | None = Field(None, ge=1, description="use only the first N passages")
    template: str = "bottom_up"


@stage(BottomUpParams)
def bottom_up(ctx: StageContext, params: BottomUpParams) -> None:
    """Passage -> sentence- and passage-level queries with direct qrels (score 1).

    Example params: ``{sentence_queries: 2, passage_queries: 1, limit: 100}``
    """
    llm = ctx.llm()
    task = BottomUpTask(
        lang=ctx.lang,
        model=llm.model,
        sentence_queries=params.sentence_queries,
        passage_queries=params.passage_queries,
        max_overlap=params.max_overlap,
        template=params.template,
    )
    eligible: list[Passage] = []
    for p in ctx.read(params.passages, Passage):
        if params.limit is not None and len(eligible) >= params.limit:
            break
        if len(p.text.strip()) < params.min_chars:
            ctx.stats.inputs += 1
            ctx.fail(
                Failure(
                    stage=ctx.key,
                    item_id=p.passage_id,
                    reason="too_short",
                    detail=f"{len(p.text.strip())} < {params.min_chars} chars",
                )
            )
            continue
        eligible.append(p)
    bar = ctx.progress("passages", total=len(eligible))
    levels: Counter[str] = Counter()
    for rec in ctx.collect(run_task(task, eligible, llm), bar):
        if isinstance(rec, Query):
            levels[rec.level] += 1
            ctx.output("queries").write(rec)
        else:
            ctx.output("qrels").write(rec)
    for name in ("queries", "qrels"):
        ctx.output(name)  # the files exist even when nothing was produced
    ctx.stats.extra.update(per_level=dict(levels), origin=task.origin)


class TitlesParams(StageParams):
    documents: str = Field("ingest", description="stage output holding the Documents")
    overwrite: bool = Field(False, description="regenerate titles that already exist")
    max_chars: int = Field(2000, ge=100, description="document text shown to the LLM")
    fallback: bool = Field(True, description="on failure, title from the first sentence")
    template: str = "title"


@stage(TitlesParams)
def titles(ctx: StageContext, params: TitlesParams) -> None:
    """Every document passes through; untitled ones get an LLM-written title."""
    docs = list(ctx.read(params.documents, Document))
    todo = [d for d in docs if params.overwrite or not d.title.strip()]
    llm = ctx.llm() if todo else None
    done: dict[str, Document] = {}
    fallbacks = 0
    if llm is not None:
        task = TitleTask(
            lang=ctx.lang, model=llm.model, max_chars=params.max_chars, template=params.template
        )
        bar = ctx.progress("titles", total=len(todo))
        for doc in ctx.collect(run_task(task, todo, llm), bar):
            done[doc.doc_id] = doc
    for d in docs:
        if d.doc_id in done:
            d = done[d.doc_id]
        elif params.overwrite or not d.title.strip():
            if not params.fallback:
                continue
            fallbacks += 1
            d = d.model_copy(
                update={"title": lead_title(d), "meta": {**d.meta, "title_origin": "lead"}}
            )
        else:
            ctx.stats.inputs += 1
            ctx.stats.succeeded += 1
        ctx.output().write(d)
    ctx.output()  # exists even with no documents
    ctx.stats.extra.update(generated=len(done), fallback=fallbacks, kept=len(docs) - len(todo))


class TopicsParams(StageParams):
    documents: str = Field("titles", description="stage output holding titled Documents")
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
    outlier_threshold: float | None = Field(0.4, ge=0, le=1)
    outlier_strategy: OutlierStrategy = "c-tf-idf"
    n_words: int = Field(8, ge=1, le=50)
    seed: int = 22


def _industries(ctx: StageContext, params: TopicsParams, docs: list[Document]) -> list[str]:
    known = [d.industry or "" for d in docs]
    missing = [i for i, v in enumerate(known) if not v]
    if not missing or params.industry == "metadata" or "industry" not in params.by:
        return [v or UNKNOWN_INDUSTRY for v in known]
    taxonomy = params.taxonomy or default_taxonomy(ctx.lang)
    todo = [docs[i] for i in missing]
    if params.industry == "embedding":
        leads = [document_lead(d) for d in todo]
        labels = classify_by_embedding(
            leads, taxonomy, ctx.embedder(), min_similarity=params.min_similarity
        )
    else:
        llm = ctx.llm()
        labels = []
        for res in run_task(IndustryTask(taxonomy, lang=ctx.lang), todo, llm):
            for f in res.failures:  # the document is still clustered, as "unknown"
                ctx.fail(f, item=False)
            labels.append(res.records[0].industry if res.records else UNKNOWN_INDUSTRY)
    for i, label in zip(missing, labels, strict=True):
        known[i] = label or UNKNOWN_INDUSTRY
    return known


@stage(TopicsParams)
def topics(ctx: StageContext, params: TopicsParams) -> None:
    """Cluster documents by industry x time bucket x topic (BERTopic over title embeddings)."""
    docs: list[Document] = []
    for d in ctx.read(params.documents, Document):
        ctx.stats.inputs += 1
        if d.title.strip():
            docs.append(d)
        else:
            ctx.fail(
                Failure(
                    stage=ctx.key,
                    item_id=d.doc_id,
                    reason="no_title",
                    detail="run the 'titles' stage first",
                )
            )
    industries = _industries(ctx, params, docs)
    periods = [time_bucket(d.date, params.granularity) for d in docs]
    titles_ = [d.title for d in docs]
    if "topic" in params.by and docs:
        emb = ctx.embedder().encode(titles_, kind="query")
        labels, words, method = fit_topics(
            titles_,
            emb,
            ctx.lang,
            method=params.method,
            bertopic_min_docs=params.bertopic_min_docs,
            distance_threshold=params.distance_threshold,
            n_words=params.n_words,
            seed=params.seed,
            outlier_threshold=params.outlier_threshold,
            outlier_strategy=params.outlier_strategy,
        )
        quality = cluster_quality(emb, labels, words)
    else:
        labels, words, method, quality = [0] * len(docs), {}, "none", {}
    clusters = build_clusters(docs, labels, words, industries, periods, by=params.by)
    member = {d: c.cluster_id for c in clusters for d in c.doc_ids}
    for d, ind, per, lab in zip(docs, industries, periods, labels, strict=True):
        meta = {**d.meta, "period": per, "topic": lab, "cluster_id": member.get(d.doc_id)}
        industry = d.industry or (None if ind == UNKNOWN_INDUSTRY else ind)
        ctx.output().write(d.model_copy(update={"industry": industry, "meta": meta}))
        ctx.stats.succeeded += 1
    for c in clusters:
        ctx.output("clusters").write(c)
    ctx.output()  # both files exist even with no documents
    ctx.output("clusters")
    sizes = Counter(len(c.doc_ids) for c in clusters)
    ctx.stats.extra.update(
        method=method,
        clusters=len(clusters),
        cluster_sizes={str(k): v for k, v in sorted(sizes.items())},
        industries=dict(Counter(industries).most_common()),
        periods=dict(Counter(periods).most_common()),
        **quality,
    )


class TopDownParams(StageParams):
    clusters: str = Field("topics.clusters", description="stage output holding the clusters")
    passages: str = Field("chunk", description="stage output holding the Passages")
    min_size: int = Field(2, ge=1, description="smaller clusters are skipped")
    max_size: int = Field(8, ge=2, description="larger clusters are split evenly")
    queries: int = Field(3, ge=1, le=20, description="topic queries asked per cluster")
    min_docs: int = Field(2, ge=1, description="documents a query must name")
    max_overlap: float = Field(0.8, gt=0, le=1)
    excerpt_chars: int = Field(300, ge=0, description="lead text shown per document")
    top_k: int = Field(3, ge=1, le=50, description="candidate passages judged")
    per_document: bool = Field(True, description="top_k in each named document")
    min_score: int = Field(1, ge=1, le=2, description="judge score that grounds a query")
    limit: int | None = Field(None, ge=1, description="use only the first N clusters")
    template: str = "top_down"
    judge_template: str = "ground_judge"


@stage(TopDownParams)
def top_down(ctx: StageContext, params: TopDownParams) -> None:
    """Clusters -> topic-level cross-document queries, grounded by embedder + LLM judge."""
    skipped: Counter[str] = Counter()
    items: list[TopicCluster] = []
    for c in ctx.read(params.clusters, TopicCluster):
        for part in split_cluster(c, params.max_size):
            if len(part.doc_ids) < max(params.min_size, params.min_docs):
                skipped["too_small"] += 1
            else:
                items.append(part)
    items = items[: params.limit] if params.limit else items
    titles_by_doc = {d: t for c in items for d, t in zip(c.doc_ids, c.titles, strict=True)}
    by_doc: dict[str, list[Passage]] = {}
    for p in ctx.read(params.passages, Passage):
        if p.doc_id in titles_by_doc:  # passages chunked before titling get the judge a title
            p = p if p.title else p.model_copy(update={"title": titles_by_doc[p.doc_id]})
            by_doc.setdefault(p.doc_id, []).append(p)
    for ps in by_doc.values():
        ps.sort(key=lambda p: p.order)

    def excerpt(doc_id: str) -> str:
        first = by_doc.get(doc_id)
        return " ".join(first[0].text.split())[: params.excerpt_chars] if first else ""

    llm = ctx.llm()
    task = TopDownTask(
        lang=ctx.lang,
        model=llm.model,
        queries=params.queries,
        min_docs=params.min_docs,
        max_overlap=params.max_overlap,
        template=params.template,
    )
    topic_items = [TopicItem(c, tuple(excerpt(d) for d in c.doc_ids)) for c in items]
    bar = ctx.progress("clusters", total=len(topic_items))
    candidates = list(ctx.collect(run_task(task, topic_items, llm), bar))
    pairs = rank_candidates(
        candidates,
        by_doc,
        ctx.embedder() if candidates else None,
        top_k=params.top_k,
        per_document=params.per_document,
    )
    judge = GroundJudgeTask(lang=ctx.lang, model=llm.model, template=params.judge_template)
    judged: list[Qrel] = []
    jbar = ctx.progress("judge", total=len(pairs))
    for res in run_task(judge, pairs, llm):
        for f in res.failures:  # a failed judgement loses one candidate, not the query
            ctx.fail(f, item=False)
        judged.extend(res.records)
        jbar.advance()
    grounded, ungrounded = attach_grounding(candidates, judged, min_score=params.min_score)
    for q in ungrounded:
        ctx.fail(
            Failure(
                stage=ctx.key,
                item_id=q.query_id,
                reason="ungrounded",
                detail=f"no passage judged >= {params.min_score}",
                raw=q.model_dump_json(),
            ),
            item=False,
        )
    keep = {q.query_id for q in grounded}
    for q in grounded:
        ctx.output("queries").write(q)
    for r in judged:
        if r.query_id in keep:
            ctx.output("qrels" if r.score > 0 else "negatives").write(r)
    for name in ("queries", "qrels", "negatives"):
        ctx.output(name)  # the files exist even when nothing was produced
    scores = Counter(r.score for r in judged)
    ctx.stats.extra.update(
        skipped_clusters=dict(skipped),
        candidates=len(pairs),
        grounded=len(grounded),
        ungrounded=len(ungrounded),
        judge_scores={str(k): v for k, v in sorted(scores.items())},
    )
