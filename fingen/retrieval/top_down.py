"""Top-down topic queries (FinCPRG): the LLM reads a cluster of related documents and writes
cross-document questions naming the documents each one needs; each question is then
grounded to passages of those documents by embedder ranking + an LLM judge (0-2 rubric).

Flow::

    split_cluster:    clusters above max_size -> near-equal parts
    TopDownTask:      TopicItem (cluster + numbered documents) -> Query(level="topic")
    rank_candidates:  Query x passages of its named documents -> top-k GroundPair per document
    GroundJudgeTask:  GroundPair -> Qrel(kind="judged", score 1-2) or Qrel(kind="negative", 0)
    attach_grounding: Query + its judged Qrels -> Query with source_passage_ids, or None

Rejected rows (``Failure`` reasons): ``not_a_question``, ``wrong_language``,
``copies_passage``, ``duplicate``, ``over_quota``, ``bad_document_ids`` (a number that was not
shown), ``too_few_documents`` (fewer than ``min_docs`` distinct documents named).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from fingen.llm.base import Completion
from fingen.llm.tasks import RowRejected
from fingen.prompts import load_prompt
from fingen.records import Failure, Passage, Qrel, Query, content_id
from fingen.retrieval.bottom_up import RowChecker
from fingen.retrieval.topics import TopicCluster

__all__ = [
    "GroundJudgeTask",
    "GroundPair",
    "Judgement",
    "TopDownReply",
    "TopDownTask",
    "TopicItem",
    "TopicQuery",
    "attach_grounding",
    "rank_candidates",
    "split_cluster",
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

    def documents(self) -> list[dict[str, Any]]:
        ex = self.excerpts or ("",) * len(self.cluster.doc_ids)
        return [
            {"n": i + 1, "doc_id": d, "title": t, "excerpt": e}
            for i, (d, t, e) in enumerate(
                zip(self.cluster.doc_ids, self.cluster.titles, ex, strict=True)
            )
        ]


class TopicQuery(BaseModel):
    question: str = Field(description="a question that needs several of the documents")
    documents: list[int] = Field(description="numbers of the documents needed to answer it")
    answer: str = Field("", description="a short answer, if the excerpts give one")


class TopDownReply(BaseModel):
    queries: list[TopicQuery] = Field(default_factory=list)


class TopDownTask:
    """LLM task: TopicItem -> topic-level Query records (not yet grounded).

    Args:
        lang: prompt and expected query language.
        model: model name recorded in ``Query.origin``.
        queries: how many questions the prompt asks for per cluster; extra ones are cut.
        min_docs: a question must name at least this many distinct documents.
        max_overlap: token-trigram overlap cap against the titles and excerpts shown.
    """

    name = "top_down"
    response_model = TopDownReply

    def __init__(
        self,
        *,
        lang: str = "en",
        model: str = "",
        queries: int = 3,
        min_docs: int = 2,
        max_overlap: float = 0.8,
        template: str = "top_down",
    ) -> None:
        if queries < 1 or min_docs < 1:
            raise ValueError("queries and min_docs must be >= 1")
        self.lang, self.template = lang, template
        self.queries, self.min_docs, self.max_overlap = queries, min_docs, max_overlap
        self.origin = f"{load_prompt(template, lang).short_hash}@{model}"

    def item_id(self, item: TopicItem) -> str:
        return item.cluster.cluster_id

    def build(self, item: TopicItem) -> list[dict[str, str]]:
        c = item.cluster
        return load_prompt(self.template, self.lang).render(
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
        checker = RowChecker(shown, self.lang, max_overlap=self.max_overlap)
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
class GroundPair:
    """One candidate passage for a topic query, with its embedder similarity."""

    query: Query
    passage: Passage
    similarity: float = 0.0


def rank_candidates(
    queries: Sequence[Query],
    passages_by_doc: Mapping[str, Sequence[Passage]],
    embedder: Any,
    *,
    top_k: int = 3,
    per_document: bool = True,
) -> list[GroundPair]:
    """The ``top_k`` passages of each query's named documents by cosine similarity.

    With ``per_document`` the top-k is taken in each named document (so every document the
    question needs gets candidates), else over all of their passages together.
    """
    needed = sorted({d for q in queries for d in q.source_doc_ids if d in passages_by_doc})
    pool = [p for d in needed for p in passages_by_doc[d]]
    if not queries or not pool:
        return []
    index = {p.passage_id: i for i, p in enumerate(pool)}
    pvec = np.asarray(embedder.encode([p.text for p in pool], kind="passage"))
    qvec = np.asarray(embedder.encode([q.text for q in queries], kind="query"))
    pairs: list[GroundPair] = []
    for qi, q in enumerate(queries):
        groups = [list(passages_by_doc.get(d, ())) for d in q.source_doc_ids]
        if not per_document:
            groups = [[p for g in groups for p in g]]
        for group in groups:
            if not group:
                continue
            sims = pvec[[index[p.passage_id] for p in group]] @ qvec[qi]
            for j in np.argsort(-sims, kind="stable")[:top_k]:
                pairs.append(GroundPair(q, group[int(j)], round(float(sims[j]), 4)))
    return pairs


class Judgement(BaseModel):
    rationale: str = Field(description="one or two sentences: what in the passage is relevant")
    score: int = Field(ge=0, le=2, description="0 irrelevant, 1 partly relevant, 2 relevant")


class GroundJudgeTask:
    """LLM judge: GroundPair -> one Qrel (graded 0-2; 0 is kept as a verified negative)."""

    name = "ground_judge"
    response_model = Judgement

    def __init__(self, *, lang: str = "en", model: str = "", template: str = "ground_judge"):
        self.lang, self.model, self.template = lang, model, template

    def item_id(self, item: GroundPair) -> str:
        return f"{item.query.query_id}:{item.passage.passage_id}"

    def build(self, item: GroundPair) -> list[dict[str, str]]:
        return load_prompt(self.template, self.lang).render(
            question=item.query.text, title=item.passage.title, passage=item.passage.text
        )

    def request_params(self, item: GroundPair) -> dict[str, Any]:
        return {"temperature": 0.0, "max_tokens": 256}

    def parse(self, item: GroundPair, reply: Judgement, completion: Completion) -> list[Qrel]:
        return [
            Qrel(
                query_id=item.query.query_id,
                passage_id=item.passage.passage_id,
                score=reply.score,
                kind="judged" if reply.score > 0 else "negative",
                judge=self.model,
                rationale=reply.rationale.strip()[:1000] or None,
            )
        ]


def attach_grounding(
    queries: Iterable[Query], qrels: Iterable[Qrel], *, min_score: int = 1
) -> tuple[list[Query], list[Query]]:
    """Split queries into grounded ones (``source_passage_ids`` = their passages judged
    ``>= min_score``, best first) and ungrounded ones."""
    by_query: dict[str, list[Qrel]] = {}
    for r in qrels:
        if r.score >= min_score:
            by_query.setdefault(r.query_id, []).append(r)
    grounded, ungrounded = [], []
    for q in queries:
        positives = by_query.get(q.query_id)
        if not positives:
            ungrounded.append(q)
            continue
        ranked = sorted(positives, key=lambda r: -r.score)
        ids = list(dict.fromkeys(r.passage_id for r in ranked))
        grounded.append(q.model_copy(update={"source_passage_ids": ids}))
    return grounded, ungrounded
