"""Bottom-up query generation (FinCPRG): one LLM call per passage gives sentence-level and
passage-level queries together, each with a direct qrel to its source passage.

The prompt shows the passage as numbered sentences (``[0] ...``, ``[1] ...``). A
sentence-level query cites the sentence numbers it is answerable from and quotes the evidence
span verbatim; a passage-level query needs the passage as a whole. Every row is checked (see
``fingen.retrieval.checks``); a rejected row becomes a ``Failure`` with one of
``REJECT_REASONS``, never a silent drop.

Direct qrels have ``score=2`` ("answers the query", by construction; see ``fingen.labels``).

Example::

    for result in bottom_up_queries(passages, llm, sentence_queries=2, passage_queries=1):
        ...  # result.records: Query and Qrel; result.failures: rejected rows
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field, create_model

from fingen.errors import RowRejected
from fingen.labels import DIRECT_GRADE
from fingen.llm.base import Completion
from fingen.llm.engine import LLMEngine
from fingen.llm.tasks import LLMTask, TaskResult, run_task
from fingen.records import Failure, Passage, Qrel, Query, QueryLevel, content_id
from fingen.retrieval.checks import RowChecker, find_span, normalize_ws

__all__ = [
    "DIRECT_SCORE",
    "REJECT_REASONS",
    "BottomUpReply",
    "BottomUpTask",
    "PassageQuery",
    "SentenceQuery",
    "bottom_up_queries",
    "numbered_sentences",
]

DIRECT_SCORE = DIRECT_GRADE  # relevant by construction: the query was written from it
REJECT_REASONS = (
    "bad_sentence_ids",
    "span_not_verbatim",
    "span_too_short",
    "span_outside_cited",
    "not_a_question",
    "wrong_language",
    "not_self_contained",
    "unsupported_entity",
    "copies_passage",
    "duplicate",
    "over_quota",
)
#: Shortest sentence-level evidence span (characters, after whitespace normalization).
MIN_EVIDENCE_CHARS = {"en": 20, "zh": 8}
_MAX_QUESTION, _MAX_EVIDENCE, _MAX_ANSWER = 300, 600, 200


def min_evidence_chars(lang: str) -> int:
    return MIN_EVIDENCE_CHARS["zh" if lang.lower().startswith("zh") else "en"]


class SentenceQuery(BaseModel):
    question: str = Field(
        description="a question answerable from the cited sentences",
        json_schema_extra={"maxLength": _MAX_QUESTION},
    )
    sentence_ids: list[int] = Field(
        description="numbers of the sentences that answer it",
        json_schema_extra={"minItems": 1, "maxItems": 4},
    )
    evidence: str = Field(
        description="the answering text, copied verbatim from the passage",
        json_schema_extra={"maxLength": _MAX_EVIDENCE},
    )
    answer: str = Field(
        "", description="a short answer", json_schema_extra={"maxLength": _MAX_ANSWER}
    )


class PassageQuery(BaseModel):
    question: str = Field(
        description="a question that needs the passage as a whole",
        json_schema_extra={"maxLength": _MAX_QUESTION},
    )
    answer: str = Field(
        "", description="a short answer", json_schema_extra={"maxLength": _MAX_ANSWER}
    )


class BottomUpReply(BaseModel):
    sentence_queries: list[SentenceQuery] = Field(default_factory=list)
    passage_queries: list[PassageQuery] = Field(default_factory=list)


@functools.cache
def reply_model(sentence_queries: int, passage_queries: int, lang: str) -> type[BottomUpReply]:
    """The reply schema with the quotas in it (``minItems``/``maxItems``, evidence
    ``minLength``): grammar-constrained decoders (llama.cpp, vLLM) cannot overrun them.
    Validation stays lenient (an extra row is an ``over_quota`` failure, not a lost reply)."""

    def quota(n: int) -> dict[str, int]:
        return {"minItems": n, "maxItems": n}

    evidence = {"minLength": min_evidence_chars(lang), "maxLength": _MAX_EVIDENCE}
    sentence = create_model(
        "SentenceQuery",
        __base__=SentenceQuery,
        evidence=(str, Field(description="the answering text, copied verbatim from the passage",
                             json_schema_extra=evidence)),
    )  # fmt: skip
    return create_model(
        "BottomUpReply",
        __base__=BottomUpReply,
        sentence_queries=(list[sentence], Field(default_factory=list,  # type: ignore[valid-type]
                                                json_schema_extra=quota(sentence_queries))),
        passage_queries=(list[PassageQuery], Field(default_factory=list,
                                                   json_schema_extra=quota(passage_queries))),
    )  # fmt: skip


def numbered_sentences(passage: Passage) -> list[dict[str, Any]]:
    """``[{"idx": i, "text": sentence}]`` for the prompt (the whole text when unsplit)."""
    if not passage.sentences:
        return [{"idx": 0, "text": " ".join(passage.text.split())}]
    return [
        {"idx": i, "text": " ".join(passage.sentence_text(i).split())}
        for i in range(len(passage.sentences))
    ]


class BottomUpTask(LLMTask[Passage, Query | Qrel]):
    """LLM task: Passage -> sentence- and passage-level Query records + direct Qrels.

    Args:
        lang: prompt and expected query language ("en" or "zh").
        model: model name recorded in ``Query.origin``.
        sentence_queries / passage_queries: how many of each the prompt asks for; extra ones
            are cut and reported as ``over_quota`` failures.
        max_overlap: reject a query whose token-trigram overlap with the passage exceeds this.
        template: prompt template name (``prompts/<template>.<lang>.jinja``).
    """

    name = "bottom_up"
    template = "bottom_up"
    response_model = BottomUpReply

    def __init__(
        self,
        *,
        lang: str = "en",
        model: str = "",
        sentence_queries: int = 2,
        passage_queries: int = 1,
        max_overlap: float = 0.8,
        min_chars: int = 0,
        template: str | None = None,
    ) -> None:
        if sentence_queries < 0 or passage_queries < 0 or sentence_queries + passage_queries == 0:
            raise ValueError("ask for at least one query (sentence_queries + passage_queries)")
        super().__init__(lang=lang, template=template)
        self.model = model
        self.sentence_queries, self.passage_queries = sentence_queries, passage_queries
        self.max_overlap, self.min_chars = max_overlap, min_chars
        self.min_evidence = min_evidence_chars(lang)
        self.response_model = reply_model(sentence_queries, passage_queries, lang)  # type: ignore[misc]
        self.origin = f"{self.prompt_hash}@{model}"

    def item_id(self, item: Passage) -> str:
        return item.passage_id

    def refuse(self, item: Passage) -> tuple[str, str] | None:
        size = len(item.text.strip())
        return ("too_short", f"{size} < {self.min_chars} chars") if size < self.min_chars else None

    def build(self, item: Passage) -> list[dict[str, str]]:
        return self.render(
            title=item.title,
            company=item.company or "",
            date=item.date or "",
            doc_type=item.doc_type or "",
            industry=item.industry or "",
            sentences=numbered_sentences(item),
            n_sentence=self.sentence_queries,
            n_passage=self.passage_queries,
            min_evidence=self.min_evidence,
        )

    def _evidence_problem(
        self, item: Passage, ids: list[int], evidence: str
    ) -> tuple[str, str] | None:
        """The evidence must be verbatim, long enough, and inside the cited sentences."""
        shown = evidence[:200] or "(empty span)"
        if len(normalize_ws(evidence)) < self.min_evidence:
            return (
                "span_too_short",
                f"{len(normalize_ws(evidence))} < {self.min_evidence} chars: {shown}",
            )
        if find_span(evidence, item.text) is None:
            return "span_not_verbatim", shown
        if item.sentences:
            start, end = item.sentences[ids[0]].start, item.sentences[ids[-1]].end
            if find_span(evidence, item.text[start:end]) is None:
                return "span_outside_cited", f"not in sentences {ids}: {shown}"
        return None

    def parse(
        self, item: Passage, reply: BottomUpReply, completion: Completion
    ) -> list[Query | Qrel | Failure]:
        if not reply.sentence_queries and not reply.passage_queries:
            raise RowRejected("no_queries", "the reply holds no query")
        checker = RowChecker(
            item.text, self.lang, max_overlap=self.max_overlap, context=item.context()
        )
        n_sentences = max(1, len(item.sentences))
        out: list[Query | Qrel | Failure] = []

        def reject(reason: str, detail: str, row: BaseModel) -> None:
            raw = row.model_dump_json()
            out.append(
                Failure(
                    stage=self.name,
                    item_id=item.passage_id,
                    reason=reason,
                    detail=detail[:500],
                    raw=raw,
                )
            )

        for i, sq in enumerate(reply.sentence_queries):
            if i >= self.sentence_queries:
                reject("over_quota", f"sentence query {i + 1} > {self.sentence_queries}", sq)
                continue
            ids = sorted(set(sq.sentence_ids))
            problem: tuple[str, str] | None = None
            if not ids or ids[0] < 0 or ids[-1] >= n_sentences:
                problem = ("bad_sentence_ids", f"{sq.sentence_ids} not in 0..{n_sentences - 1}")
            else:
                problem = self._evidence_problem(item, ids, sq.evidence)
                problem = problem or checker.check(sq.question)
            if problem is not None:
                reject(*problem, sq)
                continue
            out += self._records(item, "sentence", sq.question, sq.answer, ids, sq.evidence)
        for i, pq in enumerate(reply.passage_queries):
            if i >= self.passage_queries:
                reject("over_quota", f"passage query {i + 1} > {self.passage_queries}", pq)
                continue
            problem = checker.check(pq.question)
            if problem is not None:
                reject(*problem, pq)
                continue
            out += self._records(item, "passage", pq.question, pq.answer, None, None)
        return out

    def _records(
        self,
        item: Passage,
        level: QueryLevel,
        question: str,
        answer: str,
        ids: list[int] | None,
        evidence: str | None,
    ) -> list[Query | Qrel]:
        text = " ".join(question.split())
        query = Query(
            query_id=content_id(text, level, item.passage_id),
            text=text,
            level=level,
            lang=self.lang,
            origin=self.origin,
            source_passage_ids=[item.passage_id],
            source_doc_ids=[item.doc_id],
            answer=answer.strip() or None,
            evidence_sentence_ids=ids,
            evidence=evidence,
        )
        qrel = Qrel(
            query_id=query.query_id, passage_id=item.passage_id, score=DIRECT_SCORE, kind="direct"
        )
        return [query, qrel]


def bottom_up_queries(
    passages: Iterable[Passage], llm: LLMEngine, **options: Any
) -> Iterator[TaskResult[Passage, Query | Qrel]]:
    """Sentence- and passage-level queries with direct qrels for every passage, in order.

    ``options`` go to :class:`BottomUpTask` (lang, sentence_queries, passage_queries,
    max_overlap, min_chars, template); the query origin names ``llm.model``. Passages shorter
    than ``min_chars`` fail as ``too_short`` without a request.
    """
    return run_task(BottomUpTask(model=llm.model, **options), passages, llm)
