"""Typed records that cross every stage boundary (see DESIGN.md, "Records").

IDs are content hashes, never random: the same input and config give the same IDs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "KINDS",
    "CoTSample",
    "DPORecord",
    "Document",
    "Failure",
    "HardNegatives",
    "Passage",
    "QAItem",
    "Qrel",
    "Query",
    "QueryLevel",
    "RLRecord",
    "Record",
    "SFTRecord",
    "Sentence",
    "TopicCluster",
    "content_id",
    "record_key",
]

QueryLevel = Literal["sentence", "passage", "topic"]


def content_id(*parts: object, prefix: str = "", length: int = 16) -> str:
    """Stable ID from the given parts: ``prefix`` + first ``length`` hex of sha256."""
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x1f")
    return prefix + h.hexdigest()[:length]


class Record(BaseModel):
    """Base of all records: forbid unknown fields so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class Document(Record):
    doc_id: str
    title: str = ""
    text: str
    lang: str = "en"
    date: str | None = None
    industry: str | None = None
    company: str | None = None
    doc_type: str | None = None
    source: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class Sentence(Record):
    idx: int
    start: int
    end: int


class Passage(Record):
    """A chunk of one document; it carries the document's title and metadata, which the
    query generators show the model and check entities against."""

    passage_id: str
    doc_id: str
    text: str
    sentences: list[Sentence] = Field(default_factory=list)
    order: int = 0
    title: str = ""
    lang: str = "en"
    company: str | None = None
    date: str | None = None
    doc_type: str | None = None
    industry: str | None = None

    def context(self) -> str:
        """Title and metadata as one line ("" when there is none)."""
        parts = (self.title, self.company, self.doc_type, self.date, self.industry)
        return " | ".join(p for p in parts if p)

    def sentence_text(self, idx: int) -> str:
        s = self.sentences[idx]
        return self.text[s.start : s.end]


class Query(Record):
    query_id: str
    text: str
    level: QueryLevel
    lang: str = "en"
    origin: str = ""  # "<prompt sha256[:12]>@<model>"
    source_passage_ids: list[str] = Field(default_factory=list)
    source_doc_ids: list[str] = Field(default_factory=list)
    answer: str | None = None
    evidence_sentence_ids: list[int] | None = None
    evidence: str | None = None


class Qrel(Record):
    """A relevance label: grade 0 (not relevant), 1 (partially) or 2 (answers the query);
    ``kind`` says where it came from (see ``fingen.labels``)."""

    query_id: str
    passage_id: str
    score: int = Field(2, ge=0, le=2)
    kind: Literal["direct", "mined", "judged"] = "direct"
    judge: str | None = None
    rationale: str | None = None


class TopicCluster(Record):
    """Documents grouped by industry x time bucket x topic (``topics.clusters.jsonl``)."""

    cluster_id: str
    industry: str
    period: str
    topic: int
    words: list[str]
    doc_ids: list[str]
    titles: list[str]


class HardNegatives(Record):
    """One query's training group: its positives and hard negatives (with where each came from)."""

    query_id: str
    positive_ids: list[str]
    positive_scores: list[float] = Field(default_factory=list)  # per positive: similarity
    negative_ids: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)  # per negative: "verified" | "ranked"
    scores: list[float] = Field(default_factory=list)  # per negative: embedder similarity


class QAItem(Record):
    qa_id: str
    question: str
    context: str = ""
    gold_answer: str
    answer_type: str = "text"  # number | percent | yes_no | choice | label | text | span
    source: str = ""
    program: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class CoTSample(Record):
    sample_id: str
    qa_id: str
    sample_idx: int = 0
    reasoning: str = ""
    answer: str | None = None
    raw: str = ""
    finish_reason: str = "stop"
    tokens: int = 0
    correct: bool | None = None
    quality: bool | None = None
    reasons: list[str] = Field(default_factory=list)


class SFTRecord(Record):
    messages: list[dict[str, str]]
    source: str = ""
    qa_id: str | None = None


class DPORecord(Record):
    prompt: str
    chosen: str
    rejected: str
    rejected_reason: str = ""
    qa_id: str | None = None


class RLRecord(Record):
    prompt: str
    answer: str
    source: str = ""
    qa_id: str | None = None


class Failure(Record):
    """A row that could not be produced: kept with its raw text and reason, never dropped."""

    stage: str
    item_id: str
    reason: str
    detail: str = ""
    raw: str = ""


#: Record kinds of stage outputs: kind -> (model, fields that identify a record). A run's
#: view of a kind merges its files in stage order; a later record with the same key wins.
#: Kinds without a model hold plain JSON rows (file lists, metrics); ``None`` keys keep all.
KINDS: dict[str, tuple[type[Record] | None, tuple[str, ...] | None]] = {
    "document": (Document, ("doc_id",)),
    "passage": (Passage, ("passage_id",)),
    "query": (Query, ("query_id",)),
    "qrel": (Qrel, ("query_id", "passage_id")),
    "cluster": (TopicCluster, ("cluster_id",)),
    "hard_negatives": (HardNegatives, ("query_id",)),
    "qa": (QAItem, ("qa_id",)),
    "cot": (CoTSample, ("sample_id",)),
    "sft": (SFTRecord, ()),
    "dpo": (DPORecord, ()),
    "rl": (RLRecord, ()),
    "failure": (Failure, None),
    "evaluation": (None, None),
    "file": (None, None),
    "model": (None, None),  # {"file": model folder in the run, "base": ..., "rows": n}
}


def record_key(kind: str, record: Record | dict[str, Any]) -> tuple[Any, ...] | None:
    """The identity of a record of ``kind`` (``()``: the whole record; None: no identity)."""
    fields = KINDS[kind][1]
    if fields is None:
        return None
    data = record if isinstance(record, dict) else record.__dict__
    if not fields:
        if isinstance(record, Record):
            return (record.model_dump_json(),)
        return (repr(sorted(data.items())),)
    return tuple(data[f] for f in fields)
