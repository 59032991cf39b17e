"""Grounding topic queries (FinCPRG): each question is tied to passages of the documents it
names by embedder ranking, then an LLM judge grades each candidate on a 0-2 rubric.

Flow::

    rank_candidates:  Query x passages of its named documents -> top-k GroundPair per document
    GroundJudgeTask:  GroundPair -> Qrel(kind="judged", score 0-2)
    attach_grounding: Query + its judged Qrels -> Query with source_passage_ids, or None
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from fingen.llm.base import Completion
from fingen.llm.tasks import LLMTask
from fingen.records import Passage, Qrel, Query

__all__ = [
    "GroundJudgeTask",
    "GroundPair",
    "Judgement",
    "attach_grounding",
    "rank_candidates",
]


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


class GroundJudgeTask(LLMTask[GroundPair, Qrel]):
    """LLM judge: GroundPair -> one judged Qrel (graded 0-2; 0 is a verified negative)."""

    name = "ground_judge"
    template = "ground_judge"
    response_model = Judgement

    def __init__(self, *, lang: str = "en", model: str = "", template: str | None = None):
        super().__init__(lang=lang, template=template)
        self.model = model

    def item_id(self, item: GroundPair) -> str:
        return f"{item.query.query_id}:{item.passage.passage_id}"

    def build(self, item: GroundPair) -> list[dict[str, str]]:
        return self.render(
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
                kind="judged",
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
