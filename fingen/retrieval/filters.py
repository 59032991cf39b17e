"""Query filters run after generation and mining: near-duplicates and the round-trip check.

- Near-duplicates: two queries are duplicates when their normalized texts are equal
  (``checks.dedup_key``: NFKC, case-folded, no whitespace/punctuation) or their embeddings
  have cosine ``>= threshold``. Greedy in input order: the first of a group is kept. The
  embedding test looks at each query's ``neighbors`` nearest queries only.
- Round trip (off by default): a query is kept when one of its source passages (its
  ``source_passage_ids``, else its direct/judged positives) is in the embedder's top-k over
  the corpus. Queries without any source passage are kept unchecked.

Rejected queries become ``Failure`` records (``near_duplicate``, ``round_trip_failed``).

>>> result = filter_queries(queries, passages, qrels, embedder=emb, dedup_threshold=0.95)  # doctest: +SKIP
>>> result.kept, result.failures, result.counts                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fingen.records import Failure, Passage, Qrel, Query
from fingen.retrieval.checks import dedup_key

if TYPE_CHECKING:
    from fingen.embed.base import Embedder
    from fingen.embed.index import VectorIndex

__all__ = ["FilterResult", "filter_queries", "near_duplicates", "round_trip"]


@dataclass
class FilterResult:
    kept: list[Query]
    failures: list[Failure] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # by filter: rejected rows
    unchecked: int = 0  # queries the round trip could not check (no source passage)


def near_duplicates(
    queries: Sequence[Query],
    *,
    vectors: np.ndarray | None = None,
    threshold: float = 0.95,
    neighbors: int = 16,
) -> dict[str, tuple[str, str]]:
    """Duplicates to drop: query_id -> (kept query_id it duplicates, "exact" or "cosine=x").

    Args:
        queries: in priority order (earlier ones are kept).
        vectors: normalized query embeddings in the same order (None: exact text only).
        threshold: cosine at or above which two queries are duplicates.
        neighbors: how many nearest queries each query is compared with.
    """
    from fingen.embed.index import ExactIndex

    dropped: dict[str, tuple[str, str]] = {}
    first_by_key: dict[str, int] = {}
    for i, q in enumerate(queries):
        key = dedup_key(q.text)
        if key in first_by_key:
            dropped[q.query_id] = (queries[first_by_key[key]].query_id, "exact")
        else:
            first_by_key[key] = i
    if vectors is None or len(queries) < 2:
        return dropped
    scores, indices = ExactIndex(vectors).search(vectors, min(neighbors + 1, len(queries)))
    for i, q in enumerate(queries):
        if q.query_id in dropped:
            continue
        for s, j in zip(scores[i].tolist(), indices[i].tolist(), strict=True):
            if s < threshold:
                break
            if j < i and queries[j].query_id not in dropped:
                dropped[q.query_id] = (queries[j].query_id, f"cosine={s:.4f}")
                break
    return dropped


def _sources(queries: Sequence[Query], qrels: Iterable[Qrel]) -> dict[str, set[str]]:
    positives: dict[str, set[str]] = defaultdict(set)
    for r in qrels:
        if r.kind in ("direct", "judged") and r.score > 0:
            positives[r.query_id].add(r.passage_id)
    return {
        q.query_id: set(q.source_passage_ids) or positives.get(q.query_id, set()) for q in queries
    }


def round_trip(
    queries: Sequence[Query],
    passages: Sequence[Passage],
    *,
    query_vectors: np.ndarray,
    index: VectorIndex,
    top_k: int = 10,
    qrels: Iterable[Qrel] = (),
) -> dict[str, bool | None]:
    """query_id -> True (a source passage is in the top-k), False, or None (nothing to check)."""
    sources = _sources(queries, qrels)
    out: dict[str, bool | None] = {}
    if not len(queries):
        return out
    hits = index.search(query_vectors, min(top_k, len(passages)))[1]
    for q, row in zip(queries, hits, strict=True):
        src = sources[q.query_id]
        if not src:
            out[q.query_id] = None
            continue
        found = {passages[i].passage_id for i in row.tolist() if i >= 0}
        out[q.query_id] = bool(found & src)
    return out


def filter_queries(
    queries: Sequence[Query],
    passages: Sequence[Passage],
    qrels: Sequence[Qrel] = (),
    *,
    embedder: Embedder | None = None,
    dedup: bool = True,
    dedup_threshold: float = 0.95,
    round_trip_k: int | None = None,
    passage_vectors: np.ndarray | None = None,
    stage: str = "filter",
) -> FilterResult:
    """Apply the near-duplicate filter, then (if ``round_trip_k``) the round-trip check.

    Args:
        queries: candidates, in priority order.
        passages: the corpus (for the round trip).
        qrels: labels; direct/judged positives stand in for missing ``source_passage_ids``.
        embedder: needed for the cosine test and the round trip (None: exact dedup only).
        dedup: run the near-duplicate filter.
        dedup_threshold: cosine for near-duplicates (> 1 turns the embedding test off).
        round_trip_k: keep a query only if a source passage is in the top-k (None: off).
        passage_vectors: precomputed passage embeddings for the round trip.
    """
    from fingen.embed.index import build_index

    result = FilterResult(kept=[])
    qvecs = None
    if embedder is not None and queries and (round_trip_k or (dedup and dedup_threshold <= 1)):
        qvecs = embedder.encode([q.text for q in queries], kind="query")
    dropped = {}
    if dedup:
        use = qvecs if dedup_threshold <= 1 else None
        dropped = near_duplicates(queries, vectors=use, threshold=dedup_threshold)
    survivors = [i for i, q in enumerate(queries) if q.query_id not in dropped]
    checks: dict[str, bool | None] = {}
    if round_trip_k:
        if embedder is None or qvecs is None:
            raise ValueError("the round-trip check needs an embedder")
        if passage_vectors is None:
            passage_vectors = embedder.encode([p.text for p in passages], kind="passage")
        checks = round_trip(
            [queries[i] for i in survivors],
            passages,
            query_vectors=qvecs[survivors],
            index=build_index(passage_vectors),
            top_k=round_trip_k,
            qrels=qrels,
        )
    for q in queries:
        if q.query_id in dropped:
            kept_id, how = dropped[q.query_id]
            reason, detail = "near_duplicate", f"duplicate of {kept_id} ({how})"
        elif checks.get(q.query_id) is False:
            reason, detail = "round_trip_failed", f"no source passage in the top-{round_trip_k}"
        else:
            result.unchecked += int(round_trip_k is not None and checks.get(q.query_id) is None)
            result.kept.append(q)
            continue
        result.counts[reason] += 1
        result.failures.append(
            Failure(stage=stage, item_id=q.query_id, reason=reason, detail=detail, raw=q.text)
        )
    return result
