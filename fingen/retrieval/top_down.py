"""Top-down topic queries (FinCPRG): the LLM reads a cluster of related documents and writes
cross-document questions naming the documents each one needs; each question is then
grounded to passages of those documents by embedder ranking + an LLM judge (0-2 rubric).

Flow (``top_down_queries`` runs it all; grounding lives in ``fingen.retrieval.grounding``)::

    split_cluster:    clusters above max_size -> near-equal parts
    TopDownTask:      TopicItem (cluster + numbered documents) -> Query(level="topic")
    rank_candidates:  Query x passages of its named documents -> top-k GroundPair per document
    GroundJudgeTask:  GroundPair -> Qrel(kind="judged", score 0-2)
    attach_grounding: Query + its judged Qrels -> Query with source_passage_ids, or None

Rejected rows (``Failure`` reasons): ``not_a_question``, ``wrong_language``,
``copies_passage``, ``duplicate``, ``over_quota``, ``bad_document_ids`` (a number that was not
shown), ``too_few_documents`` (fewer than ``min_docs`` distinct documents named),
``ungrounded`` (no passage judged ``>= min_score``).

Example::

    for result in top_down_queries(clusters, passages, llm, embedder=emb):
        ...  # result.records: grounded Query + judged Qrel; result.failures: rejected rows
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, create_model

from fingen.errors import RowRejected
from fingen.llm.base import Completion
from fingen.llm.engine import LLMEngine
from fingen.llm.tasks import LLMTask, TaskResult, run_task
from fingen.records import Failure, Passage, Qrel, Query, TopicCluster, content_id
from fingen.retrieval.checks import RowChecker
from fingen.retrieval.grounding import GroundJudgeTask, attach_grounding, rank_candidates

if TYPE_CHECKING:
    from fingen.embed.base import Embedder

__all__ = [
    "TopDownOptions",
    "TopDownReply",
    "TopDownTask",
    "TopicItem",
    "TopicQuery",
    "split_cluster",
    "top_down_queries",
]


def split_cluster(cluster: TopicCluster, max_size: int) -> list[TopicCluster]:
    """A cluster larger than ``max_size`` cut into the fewest near-equal parts that fit
    (ids ``<cluster_id>-<k>``); a cluster that fits is returned as is."""
    n = len(cluster.doc_ids)
    if n <= max_size:
        return [cluster]
    parts = -(-n // max_size)
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [
        cluster.model_copy(
            update={
                "cluster_id": f"{cluster.cluster_id}-{k}",
                "doc_ids": cluster.doc_ids[a:b],
                "titles": cluster.titles[a:b],
            }
        )
        for k, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


@dataclass(frozen=True)
class TopicItem:
    """A cluster as the LLM sees it: its documents numbered from 1, with short excerpts."""

    cluster: TopicCluster
    excerpts: tuple[str, ...] = ()
    details: tuple[str, ...] = ()  # per document: company, type, period (metadata)

    def documents(self) -> list[dict[str, Any]]:
        n = len(self.cluster.doc_ids)
        ex, det = self.excerpts or ("",) * n, self.details or ("",) * n
        return [
            {"n": i + 1, "doc_id": d, "title": t, "excerpt": e, "details": m}
            for i, (d, t, e, m) in enumerate(
                zip(self.cluster.doc_ids, self.cluster.titles, ex, det, strict=True)
            )
        ]


class TopicQuery(BaseModel):
    question: str = Field(
        description="a question that needs several of the documents",
        json_schema_extra={"maxLength": 300},
    )
    documents: list[int] = Field(description="numbers of the documents needed to answer it")
    answer: str = Field(
        "", description="a short answer, if the excerpts give one",
        json_schema_extra={"maxLength": 200},
    )  # fmt: skip


class TopDownReply(BaseModel):
    queries: list[TopicQuery] = Field(default_factory=list)


@functools.cache
def reply_model(queries: int, min_docs: int) -> type[TopDownReply]:
    """The reply schema with the quotas in it (see ``bottom_up.reply_model``)."""
    topic = create_model(
        "TopicQuery",
        __base__=TopicQuery,
        documents=(list[int], Field(description="numbers of the documents needed to answer it",
                                    json_schema_extra={"minItems": min_docs})),
    )  # fmt: skip
    return create_model(
        "TopDownReply",
        __base__=TopDownReply,
        queries=(list[topic], Field(default_factory=list,  # type: ignore[valid-type]
                                    json_schema_extra={"minItems": queries, "maxItems": queries})),
    )  # fmt: skip


class TopDownTask(LLMTask[TopicItem, Query]):
    """LLM task: TopicItem -> topic-level Query records (not yet grounded).

    Args:
        lang: prompt and expected query language.
        model: model name recorded in ``Query.origin``.
        queries: how many questions the prompt asks for per cluster; extra ones are cut.
        min_docs: a question must name at least this many distinct documents.
        max_overlap: token-trigram overlap cap against the titles and excerpts shown.
    """

    name = "top_down"
    template = "top_down"
    response_model = TopDownReply

    def __init__(
        self,
        *,
        lang: str = "en",
        model: str = "",
        queries: int = 3,
        min_docs: int = 2,
        max_overlap: float = 0.8,
        template: str | None = None,
    ) -> None:
        if queries < 1 or min_docs < 1:
            raise ValueError("queries and min_docs must be >= 1")
        super().__init__(lang=lang, template=template)
        self.queries, self.min_docs, self.max_overlap = queries, min_docs, max_overlap
        self.response_model = reply_model(queries, min_docs)  # type: ignore[misc]
        self.origin = f"{self.prompt_hash}@{model}"

    def item_id(self, item: TopicItem) -> str:
        return item.cluster.cluster_id

    def build(self, item: TopicItem) -> list[dict[str, str]]:
        c = item.cluster
        return self.render(
            industry=c.industry if c.industry not in ("*", "unknown") else "",
            period=c.period if c.period not in ("*", "unknown") else "",
            words=c.words,
            documents=item.documents(),
            n_queries=self.queries,
            min_docs=self.min_docs,
        )

    def parse(
        self, item: TopicItem, reply: TopDownReply, completion: Completion
    ) -> list[Query | Failure]:
        if not reply.queries:
            raise RowRejected("no_queries", "the reply holds no query")
        docs = item.documents()
        shown = "\n".join(f"{d['title']}\n{d['excerpt']}" for d in docs)
        context = "\n".join(
            [d["details"] for d in docs] + [item.cluster.industry, item.cluster.period]
        )
        checker = RowChecker(shown, self.lang, max_overlap=self.max_overlap, context=context)
        out: list[Query | Failure] = []
        for i, q in enumerate(reply.queries):
            named = sorted(set(q.documents))
            problem: tuple[str, str] | None = None
            if i >= self.queries:
                problem = ("over_quota", f"query {i + 1} > {self.queries}")
            elif not named or named[0] < 1 or named[-1] > len(docs):
                problem = ("bad_document_ids", f"{q.documents} not in 1..{len(docs)}")
            elif len(named) < self.min_docs:
                problem = ("too_few_documents", f"{len(named)} < {self.min_docs}: {q.documents}")
            else:
                problem = checker.check(q.question)
            if problem is not None:
                out.append(
                    Failure(
                        stage=self.name,
                        item_id=item.cluster.cluster_id,
                        reason=problem[0],
                        detail=problem[1][:500],
                        raw=q.model_dump_json(),
                    )
                )
                continue
            text = " ".join(q.question.split())
            out.append(
                Query(
                    query_id=content_id(text, "topic", item.cluster.cluster_id),
                    text=text,
                    level="topic",
                    lang=self.lang,
                    origin=self.origin,
                    source_doc_ids=[docs[n - 1]["doc_id"] for n in named],
                    answer=q.answer.strip() or None,
                )
            )
        return out


@dataclass(frozen=True)
class TopDownOptions:
    """How clusters become grounded topic queries.

    Args:
        queries: questions asked per cluster.
        min_docs: documents a question must name.
        max_overlap: token-trigram copy cap against the titles and excerpts shown.
        min_size / max_size: smaller clusters are skipped, larger ones split evenly.
        excerpt_chars: lead text shown per document.
        top_k / per_document: candidate passages judged (in each named document).
        min_score: judge grade that grounds a query (use the run's relevance.min_positive, so
            a grounded query has a positive).
        limit: use only the first N (split) clusters.
    """

    queries: int = 3
    min_docs: int = 2
    max_overlap: float = 0.8
    min_size: int = 2
    max_size: int = 8
    excerpt_chars: int = 300
    top_k: int = 3
    per_document: bool = True
    min_score: int = 2
    limit: int | None = None
    template: str = "top_down"
    judge_template: str = "ground_judge"


def _eligible(
    clusters: Iterable[TopicCluster], opts: TopDownOptions
) -> tuple[list[TopicCluster], list[TopicCluster]]:
    items: list[TopicCluster] = []
    small: list[TopicCluster] = []
    for c in clusters:
        for part in split_cluster(c, opts.max_size):
            too_small = len(part.doc_ids) < max(opts.min_size, opts.min_docs)
            (small if too_small else items).append(part)
    return (items[: opts.limit] if opts.limit else items), small


def _passages_by_doc(
    passages: Iterable[Passage], items: list[TopicCluster]
) -> dict[str, list[Passage]]:
    """The passages of the clustered documents, in order; untitled ones get their document's
    title (passages chunked before titling), which the judge sees."""
    titles = {d: t for c in items for d, t in zip(c.doc_ids, c.titles, strict=True)}
    by_doc: dict[str, list[Passage]] = {}
    for p in passages:
        if p.doc_id in titles:
            p = p if p.title else p.model_copy(update={"title": titles[p.doc_id]})
            by_doc.setdefault(p.doc_id, []).append(p)
    for ps in by_doc.values():
        ps.sort(key=lambda p: p.order)
    return by_doc


def top_down_queries(
    clusters: Iterable[TopicCluster],
    passages: Iterable[Passage],
    llm: LLMEngine,
    *,
    embedder: Embedder,
    judge_llm: LLMEngine | None = None,
    lang: str = "en",
    options: TopDownOptions | None = None,
) -> Iterator[TaskResult[TopicItem, Query | Qrel]]:
    """Grounded topic-level queries, one result per (split) cluster, in order.

    A result's records are its grounded queries and their judged labels (grades 0-2; 0 is a
    verified negative); its failures are rejected questions, failed judgements and
    ungrounded questions. Clusters below the minimum size come back ``skipped``.

    Args:
        clusters: from ``cluster_documents`` (``topics.clusters``).
        passages: the corpus (only the clustered documents' passages are kept).
        llm: writes the questions; ``judge_llm`` (default: ``llm``) grades the candidates.
        embedder: ranks each question's candidate passages.
    """
    opts = options or TopDownOptions()
    items, small = _eligible(clusters, opts)
    for c in small:
        yield TaskResult(c, c.cluster_id, skipped="too_small")
    by_doc = _passages_by_doc(passages, items)

    def excerpt(doc_id: str) -> str:
        first = by_doc.get(doc_id)
        return " ".join(first[0].text.split())[: opts.excerpt_chars] if first else ""

    def details(doc_id: str) -> str:
        first = by_doc.get(doc_id)
        if not first:
            return ""
        p = first[0]
        return "; ".join(x for x in (p.company, p.doc_type, p.date) if x)

    task = TopDownTask(
        lang=lang, model=llm.model, queries=opts.queries, min_docs=opts.min_docs,
        max_overlap=opts.max_overlap, template=opts.template,
    )  # fmt: skip
    topic_items = [
        TopicItem(c, tuple(excerpt(d) for d in c.doc_ids), tuple(details(d) for d in c.doc_ids))
        for c in items
    ]
    generated = list(run_task(task, topic_items, llm))
    candidates = [q for r in generated for q in r.records]
    pairs = rank_candidates(
        candidates, by_doc, embedder if candidates else None,
        top_k=opts.top_k, per_document=opts.per_document,
    )  # fmt: skip
    judge_llm = judge_llm or llm
    judge = GroundJudgeTask(lang=lang, model=judge_llm.model, template=opts.judge_template)
    judged: dict[str, list[Qrel]] = {}
    judge_failures: dict[str, list[Failure]] = {}
    per_query = Counter(p.query.query_id for p in pairs)
    for res in run_task(judge, pairs, judge_llm):
        qid = res.item.query.query_id
        judged.setdefault(qid, []).extend(res.records)
        judge_failures.setdefault(qid, []).extend(res.failures)
    for result in generated:
        queries = [q for q in result.records if isinstance(q, Query)]
        labels = [r for q in queries for r in judged.get(q.query_id, [])]
        grounded, ungrounded = attach_grounding(queries, labels, min_score=opts.min_score)
        keep = {q.query_id for q in grounded}
        failures = [f for q in queries for f in judge_failures.get(q.query_id, [])]
        failures += [
            Failure(
                stage=task.name, item_id=q.query_id, reason="ungrounded",
                detail=f"no passage judged >= {opts.min_score}", raw=q.model_dump_json(),
            )
            for q in ungrounded
        ]  # fmt: skip
        result.records = [*grounded, *(r for r in labels if r.query_id in keep)]
        result.failures = [*result.failures, *failures]
        result.counts["candidates"] = sum(per_query[q.query_id] for q in queries)
        yield result
