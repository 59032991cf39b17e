"""Indirect positives (FinCPRG): candidates from a query's local space and the corpus, judged.

For each query the candidates are the other passages of its source document(s) (the local
traversal space) and, optionally, the embedder's top-k over the whole corpus. Pairs that
already carry a label (direct, judged, anything in ``labeled``) are never candidates, so
direct labels are never re-judged. A judge grades each candidate 0–2 and every verdict is a
``Qrel(kind="mined")`` with that grade (exported to ``*_extended``; see ``fingen.labels``).
The outcome names what the grade means under the relevance rule:

- ``score >= threshold`` (``relevance.min_positive``, default 2) -> "positive",
- ``score == 0``                      -> "negative", a verified negative,
- ``0 < score < threshold``           -> "partial": neither a positive nor ever a negative.

>>> for outcome in mine_positives(queries, passages, qrels, judge=LLMJudge(engine),
...                               embedder=emb):  ...                  # doctest: +SKIP

(``mine_positives`` = ``gather_candidates`` then ``judge_candidates``.)
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fingen.records import Failure, Passage, Qrel, Query, QueryLevel
from fingen.retrieval.judges import Candidate, Judge, Verdict

if TYPE_CHECKING:
    from fingen.embed.base import Embedder
    from fingen.embed.index import VectorIndex
    from fingen.embed.shards import ShardedVectors

__all__ = [
    "MineOptions",
    "MineOutcome",
    "Outcome",
    "encode_corpus",
    "gather_candidates",
    "judge_candidates",
    "labeled_pairs",
    "mine_positives",
    "verdict_outcome",
]

Outcome = Literal["positive", "negative", "partial", "failed"]
_QUERY_BATCH = 256


@dataclass(frozen=True)
class MineOutcome:
    """What one judged candidate became: a mined/negative/partial ``Qrel``, or a ``Failure``."""

    outcome: Outcome
    record: Qrel | Failure
    verdict: Verdict


def labeled_pairs(qrels: Iterable[Qrel]) -> dict[str, set[str]]:
    """query_id -> passage ids that already carry any label (never candidates again)."""
    out: dict[str, set[str]] = defaultdict(set)
    for q in qrels:
        out[q.query_id].add(q.passage_id)
    return dict(out)


def encode_corpus(
    embedder: Embedder,
    passages: Sequence[Passage],
    *,
    show_progress: bool = False,
    shard_rows: int | None = None,
    shard_dir: str | Path | None = None,
) -> np.ndarray | ShardedVectors:
    """Passage vectors (n, dim), L2-normalized, in ``passages`` order.

    Bounded memory: with ``shard_rows`` (or inside ``fingen.embed.shards.shard_settings``)
    they are written to .npy shards under ``shard_dir`` (default: the settings' folder, else
    a temporary one that lives as long as the returned ``ShardedVectors``) and memory-mapped.
    """
    from fingen.embed.shards import current_shard_settings, encode_to_shards

    settings = current_shard_settings()
    rows = shard_rows or (settings.rows if settings else None)
    if rows is None:
        return embedder.encode(
            [p.text for p in passages], kind="passage", show_progress=show_progress
        )
    folder: str | Path | None = shard_dir or (settings.directory if settings else None)
    keep = None
    if folder is None:
        keep = tempfile.TemporaryDirectory(prefix="fingen-mine-")
        folder = keep.name
    vectors = encode_to_shards(
        embedder, (p.text for p in passages), folder, shard_rows=rows, kind="passage"
    )
    vectors._keep = keep  # type: ignore[attr-defined]  # the temporary folder lives with it
    return vectors


def _source_docs(query: Query, doc_of: Mapping[str, str]) -> list[str]:
    docs = list(query.source_doc_ids)
    for pid in query.source_passage_ids:
        doc = doc_of.get(pid)
        if doc is not None and doc not in docs:
            docs.append(doc)
    return docs


def _local_distance(idx: int, anchors: list[int], passages: Sequence[Passage]) -> int:
    p = passages[idx]
    same = [abs(p.order - passages[a].order) for a in anchors if passages[a].doc_id == p.doc_id]
    return min(same) if same else 1_000_000 + p.order


def gather_candidates(
    queries: Sequence[Query],
    passages: Sequence[Passage],
    *,
    labeled: Mapping[str, set[str]] | None = None,
    local: bool = True,
    global_top_k: int = 0,
    max_candidates: int | None = 20,
    embedder: Embedder | None = None,
    passage_vectors: np.ndarray | ShardedVectors | None = None,
    index: VectorIndex | None = None,
) -> Iterator[Candidate]:
    """Candidates per query, most similar first, at most ``max_candidates`` per query.

    Args:
        queries: the queries to mine for.
        passages: the whole corpus.
        labeled: query_id -> passages already labeled for it (see ``labeled_pairs``); skipped.
        local: take the other passages of the query's source document(s) (its
            ``source_doc_ids`` and the documents of its ``source_passage_ids``).
        global_top_k: also take the embedder's top-k over the corpus (0 = off).
        max_candidates: cap per query (None = no cap). With an embedder candidates are ranked
            by cosine similarity; without one, local passages by distance to a source passage.
        embedder: ranks candidates and serves ``global_top_k``; required when it is > 0.
        passage_vectors: precomputed passage vectors, in memory or a ``ShardedVectors`` (else
            encoded here when needed, sharded under ``fingen.embed.shards.shard_settings``).
        index: a ``VectorIndex`` over ``passage_vectors`` (else built here when needed).

    Raises:
        ValueError: ``global_top_k > 0`` without an embedder or vectors + index.
    """
    from fingen.embed.index import build_index
    from fingen.embed.shards import ShardedVectors

    queries = list(queries)
    if not queries or not passages:
        return
    labeled = labeled or {}
    pos = {p.passage_id: i for i, p in enumerate(passages)}
    by_doc: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(passages):
        by_doc[p.doc_id].append(i)
    doc_of = {p.passage_id: p.doc_id for p in passages}
    use_vectors = embedder is not None or passage_vectors is not None
    if global_top_k > 0 and not use_vectors:
        raise ValueError("global_top_k > 0 needs an embedder (or passage_vectors and an index)")
    if use_vectors and passage_vectors is None:
        assert embedder is not None
        passage_vectors = encode_corpus(embedder, passages)
    if global_top_k > 0 and index is None:
        if isinstance(passage_vectors, ShardedVectors):
            index = passage_vectors.as_index()
        else:
            index = build_index(passage_vectors)  # type: ignore[arg-type]
    for start in range(0, len(queries), _QUERY_BATCH):
        batch = queries[start : start + _QUERY_BATCH]
        qvecs = None
        hits: np.ndarray | None = None
        if use_vectors:
            if embedder is None:
                raise ValueError("ranking needs an embedder to encode the queries")
            qvecs = embedder.encode([q.text for q in batch], kind="query")
            if global_top_k > 0 and index is not None and len(passages):
                hits = index.search(qvecs, global_top_k)[1]
        for row, query in enumerate(batch):
            done = labeled.get(query.query_id, set())
            found: dict[int, str] = {}
            if local:
                for doc in _source_docs(query, doc_of):
                    for i in by_doc.get(doc, []):
                        if passages[i].passage_id not in done:
                            found[i] = "local"
            if hits is not None:
                for i in hits[row].tolist():
                    if i >= 0 and passages[i].passage_id not in done:
                        found[i] = "local+global" if found.get(i) == "local" else "global"
            yield from _ranked(
                query, found, passages, pos, qvecs, row, passage_vectors, max_candidates
            )


def _ranked(
    query: Query,
    found: dict[int, str],
    passages: Sequence[Passage],
    pos: Mapping[str, int],
    qvecs: np.ndarray | None,
    row: int,
    passage_vectors: Any,
    max_candidates: int | None,
) -> Iterator[Candidate]:
    ids = list(found)
    if not ids:
        return
    if qvecs is not None and passage_vectors is not None:
        sims = passage_vectors[ids] @ qvecs[row]
        order = np.argsort(-sims, kind="stable")
        ranked = [(ids[j], float(sims[j])) for j in order]
    else:
        anchors = [pos[p] for p in query.source_passage_ids if p in pos]
        ids.sort(key=lambda i: (_local_distance(i, anchors, passages), i))
        ranked = [(i, None) for i in ids]  # type: ignore[misc]
    for i, sim in ranked[:max_candidates]:
        yield Candidate(query, passages[i], found[i], sim)


def verdict_outcome(verdict: Verdict, *, threshold: int = 2) -> MineOutcome:
    """Turn one verdict into a mined positive, a verified negative, a partial, or a failure."""
    cand = verdict.candidate
    if verdict.score is None:
        failure = verdict.failure or Failure(
            stage="mine", item_id=cand.pair_id, reason="no_verdict"
        )
        return MineOutcome("failed", failure, verdict)
    if verdict.score >= threshold:
        outcome: Outcome = "positive"
    elif verdict.score == 0:
        outcome = "negative"
    else:
        outcome = "partial"
    qrel = Qrel(
        query_id=cand.query.query_id,
        passage_id=cand.passage.passage_id,
        score=verdict.score,
        kind="mined",
        judge=verdict.judge,
        rationale=verdict.rationale or None,
    )
    return MineOutcome(outcome, qrel, verdict)


def judge_candidates(
    candidates: Iterable[Candidate], judge: Judge, *, threshold: int = 2
) -> Iterator[MineOutcome]:
    """Judge every candidate (lazily, in order) and classify the verdicts.

    Args:
        candidates: from ``gather_candidates`` (or any iterable of ``Candidate``).
        judge: an ``LLMJudge``, ``CrossEncoderJudge`` or any ``Judge``.
        threshold: the lowest grade (1 or 2) that is a positive (``relevance.min_positive``).
    """
    if threshold not in (1, 2):
        raise ValueError(f"threshold must be 1 or 2, got {threshold!r}")
    for verdict in judge.judge(candidates):
        yield verdict_outcome(verdict, threshold=threshold)


@dataclass(frozen=True)
class MineOptions:
    """Which queries are mined and where their candidates come from.

    Args:
        levels: query levels mined (others are left alone).
        local: candidates from the other passages of the source documents.
        global_top_k: candidates from the embedder's top-k over the corpus (0 = off).
        max_candidates: judged per query, most similar first.
        threshold: lowest grade that is a positive (``relevance.min_positive``).
        limit: mine only the first N queries of those levels.
    """

    levels: tuple[QueryLevel, ...] = ("sentence", "passage")
    local: bool = True
    global_top_k: int = 10
    max_candidates: int = 20
    threshold: int = 2
    limit: int | None = None


def mine_positives(
    queries: Iterable[Query],
    passages: Sequence[Passage],
    qrels: Iterable[Qrel],
    *,
    judge: Judge,
    embedder: Embedder | None,
    options: MineOptions | None = None,
) -> Iterator[MineOutcome]:
    """Indirect positives for the queries: gather each one's candidates (never a pair that
    already has a label in ``qrels``) and judge them, lazily and in order.
    """
    opts = options or MineOptions()
    todo = [q for q in queries if q.level in opts.levels][: opts.limit]
    candidates = gather_candidates(
        todo,
        passages,
        labeled=labeled_pairs(qrels),
        local=opts.local,
        global_top_k=opts.global_top_k,
        max_candidates=opts.max_candidates,
        embedder=embedder if todo and passages else None,
    )
    return judge_candidates(candidates, judge, threshold=opts.threshold)
