"""Train / dev / test splits by source document, so nothing of one document leaks across.

Documents linked by a query (a topic query needs several documents) form one group; a
group's split is drawn from a hash of its smallest document id and the seed, so the same
run always gives the same splits and adding documents moves no other document. A query's
split is its documents' split. When a split is asked for (``dev > 0``) but the draw left it
empty, the group whose hash is closest moves there, so small runs still get a dev set; train
always keeps at least one group.

Example::

    doc_split, query_split = assign_splits(queries, passages, SplitConfig(dev=0.1))
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fingen.records import Passage, Query

__all__ = ["SPLITS", "SplitConfig", "assign_splits", "key_split", "query_documents"]

SPLITS = ("train", "dev", "test")


class SplitConfig(BaseModel):
    """Shares of documents held out for dev and test (the rest is train)."""

    model_config = ConfigDict(extra="forbid")

    dev: float = Field(0.1, ge=0, lt=1, description="share of documents in dev")
    test: float = Field(0.0, ge=0, lt=1, description="share of documents in test")
    seed: int = 0

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitConfig:
        if self.dev + self.test >= 1:
            raise ValueError("split: dev + test must leave documents for train")
        return self

    @property
    def names(self) -> list[str]:
        """The splits in use: train, then dev and test when their share is > 0."""
        return ["train"] + [s for s in ("dev", "test") if getattr(self, s) > 0]


def _draw(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def key_split(key: str, config: SplitConfig) -> str:
    """The split of one independent item (e.g. a QA item's source document)."""
    u = _draw(key, config.seed)
    return "test" if u < config.test else "dev" if u < config.test + config.dev else "train"


def query_documents(query: Query, doc_of: dict[str, str]) -> list[str]:
    """The documents a query is about: its source documents and its source passages' ones."""
    docs = list(query.source_doc_ids)
    docs += [doc_of[p] for p in query.source_passage_ids if p in doc_of]
    return list(dict.fromkeys(docs))


class _Groups:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_splits(
    queries: Sequence[Query], passages: Iterable[Passage], config: SplitConfig
) -> tuple[dict[str, str], dict[str, str]]:
    """``(document -> split, query -> split)`` (see the module doc)."""
    doc_of: dict[str, str] = {}
    groups = _Groups()
    for p in passages:
        doc_of[p.passage_id] = p.doc_id
        groups.find(p.doc_id)
    for q in queries:
        docs = query_documents(q, doc_of)
        for d in docs:
            groups.find(d)
        for a, b in itertools.pairwise(docs):
            groups.union(a, b)
    roots = sorted({groups.find(d) for d in groups.parent})
    draws = {r: _draw(r, config.seed) for r in roots}
    split = {r: key_split(r, config) for r in roots}
    if roots and "train" not in split.values():  # there is always something to train on
        split[max(roots, key=lambda r: draws[r])] = "train"
    for name, share, lo in (("test", config.test, 0.0), ("dev", config.dev, config.test)):
        if share > 0 and len(roots) > 1 and name not in split.values():
            movable = [r for r in roots if split[r] == "train"]
            if len(movable) > 1:  # keep at least one group for train
                closest = min(movable, key=lambda r: abs(draws[r] - lo))
                split[closest] = name
    doc_split = {d: split[groups.find(d)] for d in groups.parent}
    query_split = {}
    for q in queries:
        docs = query_documents(q, doc_of)
        query_split[q.query_id] = doc_split[docs[0]] if docs else "train"
    return doc_split, query_split
