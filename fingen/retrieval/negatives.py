"""Hard negatives (FinBERT2, sentence-transformers' ``mine_hard_negatives``).

Per query: rank the corpus with the embedder, keep ranks in ``[range_min, range_max)``
(0-based positions in the full ranking, positives included), drop every passage that is a
known positive (any label with score > 0: direct, judged, mined, partial), drop candidates
within the margin of the positive (``absolute_margin``: ``neg <= pos - m``;
``relative_margin``: ``neg <= pos - |pos| * r``, i.e. ``pos * (1 - r)`` for ``pos > 0``), where
``pos`` is the *lowest* similarity among the query's positives (the conservative choice),
then take the top ones or a seeded random sample. Verified negatives from mining (judged 0)
come first, most similar first, without window or margin: a judge has already seen them.

``hard_negatives_for_vectors`` works on plain arrays (bench/mining.py calls it);
``hard_negatives`` works on records and yields one ``HardNegatives`` per query.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fingen.labels import RelevanceRule
from fingen.records import Failure, HardNegatives, Passage, Qrel, Query

if TYPE_CHECKING:
    from fingen.embed.base import Embedder
    from fingen.embed.index import VectorIndex
    from fingen.embed.shards import ShardedVectors

__all__ = [
    "HardNegativeConfig",
    "hard_negatives",
    "hard_negatives_for_run",
    "hard_negatives_for_vectors",
    "select_negatives",
]

Picked = tuple[int, float, str]  # (corpus index, similarity, source)
POSITIVE_KINDS = ("direct", "judged", "mined")


class HardNegativeConfig(BaseModel):
    """How negatives are chosen from the embedder's ranking."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    range_min: int = Field(10, ge=0, description="first rank considered (0-based)")
    range_max: int = Field(100, ge=1, description="ranks below this are considered")
    absolute_margin: float | None = Field(None, description="neg <= pos - margin")
    relative_margin: float | None = Field(None, ge=0, lt=1, description="neg <= pos - |pos|*r")
    max_score: float | None = Field(None, description="neg similarity at most this")
    num_negatives: int = Field(15, ge=1)
    sampling: Literal["top", "random"] = "top"
    seed: int = 42
    use_verified: bool = True

    @model_validator(mode="after")
    def _window(self) -> HardNegativeConfig:
        if self.range_min >= self.range_max:
            raise ValueError(f"range_min ({self.range_min}) must be < range_max ({self.range_max})")
        return self


def _allowed(score: float, pos: float | None, config: HardNegativeConfig) -> bool:
    if config.max_score is not None and score > config.max_score:
        return False
    if pos is None:
        return True
    if config.absolute_margin is not None and score > pos - config.absolute_margin:
        return False
    return not (
        config.relative_margin is not None and score > pos - abs(pos) * config.relative_margin
    )


def select_negatives(
    ranked_idx: np.ndarray,
    ranked_scores: np.ndarray,
    *,
    positive_score: float | None,
    exclude: set[int],
    config: HardNegativeConfig,
    rng: np.random.Generator | None = None,
    verified: Sequence[tuple[int, float]] = (),
) -> list[Picked]:
    """Negatives for one query from its ranking (best first) and its verified negatives.

    Args:
        ranked_idx: corpus indices of the embedder's ranking, best first (-1 = padding).
        ranked_scores: their similarities.
        positive_score: the reference positive similarity for the margins (None: no margin).
        exclude: corpus indices that must never be negatives (known positives).
        config: window, margins, count and sampling.
        rng: random generator for ``sampling="random"``.
        verified: (corpus index, similarity) of judged negatives, taken first.
    """
    picked: list[Picked] = []
    seen = set(exclude)
    if config.use_verified:
        for idx, score in sorted(verified, key=lambda v: -v[1]):
            if idx not in seen and len(picked) < config.num_negatives:
                picked.append((int(idx), float(score), "verified"))
                seen.add(idx)
    need = config.num_negatives - len(picked)
    if need <= 0:
        return picked
    stop = min(config.range_max, len(ranked_idx))
    pool = [
        (int(i), float(s))
        for i, s in zip(
            ranked_idx[config.range_min : stop], ranked_scores[config.range_min : stop], strict=True
        )
        if i >= 0 and int(i) not in seen and _allowed(float(s), positive_score, config)
    ]
    if config.sampling == "random" and len(pool) > need:
        rng = rng or np.random.default_rng(config.seed)
        chosen = np.sort(rng.choice(len(pool), size=need, replace=False))
        pool = [pool[j] for j in chosen]
    picked.extend((i, s, "ranked") for i, s in pool[:need])
    return picked


def hard_negatives_for_vectors(
    query_vectors: np.ndarray,
    corpus_vectors: np.ndarray | ShardedVectors,
    positives: Sequence[Iterable[int]],
    *,
    config: HardNegativeConfig | None = None,
    exclude: Sequence[Iterable[int]] | None = None,
    verified: Sequence[Iterable[int]] | None = None,
    index: VectorIndex | None = None,
    batch_size: int = 1024,
) -> list[list[Picked]]:
    """Hard negatives for every query on plain arrays (normalized vectors, inner product).

    Args:
        query_vectors: (n_queries, dim).
        corpus_vectors: (n_corpus, dim), or a ``ShardedVectors`` (searched shard by shard:
            memory follows the shard size; the picks are those of the in-memory search).
        positives: per query, corpus indices of its positives (margins use the lowest score).
        config: see ``HardNegativeConfig`` (defaults: ranks 10–100, 15 negatives, top).
        exclude: per query, further indices never to pick (e.g. partially relevant).
        verified: per query, indices of verified negatives (taken first).
        index: a ``VectorIndex`` over ``corpus_vectors`` (else one is built: faiss if present).
        batch_size: queries per search call.

    Returns:
        Per query, a list of (corpus index, similarity, source), at most ``num_negatives``.
    """
    from fingen.embed.index import build_index
    from fingen.embed.shards import ShardedVectors, gather

    config = config or HardNegativeConfig()
    queries = np.asarray(query_vectors, dtype=np.float32)
    corpus: Any
    if isinstance(corpus_vectors, ShardedVectors):  # bounded memory: searched shard by shard
        corpus = corpus_vectors
        index = index or corpus.as_index()
    else:
        corpus = np.asarray(corpus_vectors, dtype=np.float32)
        index = index or build_index(corpus)
    out: list[list[Picked]] = []
    k = min(config.range_max, len(corpus))
    for start in range(0, len(queries), batch_size):
        block = queries[start : start + batch_size]
        scores, indices = index.search(block, k)
        rows = range(start, start + len(block))
        pos_of = {qi: sorted(set(positives[qi])) for qi in rows}
        ver_of = {qi: sorted(set(verified[qi])) if verified is not None else [] for qi in rows}
        needed = sorted({i for qi in rows for i in (*pos_of[qi], *ver_of[qi])})
        vec = dict(zip(needed, gather(corpus, needed), strict=True)) if needed else {}
        for row in range(len(block)):
            qi = start + row
            pos, ver = pos_of[qi], ver_of[qi]
            banned = set(pos) | (set(exclude[qi]) if exclude is not None else set())
            pos_score = float((np.stack([vec[i] for i in pos]) @ block[row]).min()) if pos else None
            ver_scores = (np.stack([vec[i] for i in ver]) @ block[row]).tolist() if ver else []
            rng = np.random.default_rng((config.seed, qi))
            out.append(
                select_negatives(
                    indices[row],
                    scores[row],
                    positive_score=pos_score,
                    exclude=banned,
                    config=config,
                    rng=rng,
                    verified=list(zip(ver, ver_scores, strict=True)),
                )
            )
    return out


def hard_negatives(
    queries: Sequence[Query],
    passages: Sequence[Passage],
    qrels: Iterable[Qrel],
    *,
    embedder: Embedder,
    config: HardNegativeConfig | None = None,
    min_positive: int = 2,
    passage_vectors: np.ndarray | ShardedVectors | None = None,
    index: VectorIndex | None = None,
    stage: str = "hard_negatives",
) -> Iterator[HardNegatives | Failure]:
    """One ``HardNegatives`` per query; ``Failure`` for queries without positive or negative.

    Positives are labels with ``score >= min_positive`` (``fingen.labels``: direct labels
    are 2); every label with ``score > 0`` is excluded from the negatives; judged or mined
    labels of grade 0 are the verified negatives.
    """
    config = config or HardNegativeConfig()
    rule = RelevanceRule(min_positive)
    pos_of = {p.passage_id: i for i, p in enumerate(passages)}
    positives: dict[str, dict[int, tuple[int, int, int]]] = defaultdict(dict)
    banned: dict[str, set[int]] = defaultdict(set)
    verified: dict[str, set[int]] = defaultdict(set)
    for q in qrels:
        i = pos_of.get(q.passage_id)
        if i is None:
            continue
        if rule.is_negative(q):
            verified[q.query_id].add(i)
        elif rule.never_negative(q):
            banned[q.query_id].add(i)
            if rule.is_positive(q):
                key = (POSITIVE_KINDS.index(q.kind), -q.score, i)  # direct first, then by grade
                positives[q.query_id][i] = min(key, positives[q.query_id].get(i, key))
    todo = [q for q in queries if positives.get(q.query_id)]
    for q in queries:
        if not positives.get(q.query_id):
            yield Failure(stage=stage, item_id=q.query_id, reason="no_positive")
    if not todo:
        return
    if passage_vectors is None:
        passage_vectors = embedder.encode([p.text for p in passages], kind="passage")
    qvecs = embedder.encode([q.text for q in todo], kind="query")
    picked = hard_negatives_for_vectors(
        qvecs,
        passage_vectors,
        [positives[q.query_id] for q in todo],
        config=config,
        exclude=[banned[q.query_id] for q in todo],
        verified=[verified[q.query_id] for q in todo],
        index=index,
    )
    from fingen.embed.shards import gather

    for row, (q, negs) in enumerate(zip(todo, picked, strict=True)):
        if not negs:
            yield Failure(stage=stage, item_id=q.query_id, reason="no_negatives")
            continue
        pos = sorted(positives[q.query_id], key=positives[q.query_id].__getitem__)
        pos_sims = gather(passage_vectors, pos) @ np.asarray(qvecs[row], dtype=np.float32)
        yield HardNegatives(
            query_id=q.query_id,
            positive_ids=[passages[i].passage_id for i in pos],
            positive_scores=[round(float(v), 6) for v in pos_sims],
            negative_ids=[passages[i].passage_id for i, _, _ in negs],
            sources=[s for _, _, s in negs],
            scores=[round(v, 6) for _, v, _ in negs],
        )


def hard_negatives_for_run(
    queries: Sequence[Query],
    passages: Sequence[Passage],
    qrels: Iterable[Qrel],
    *,
    embedder: Embedder,
    config: HardNegativeConfig | None = None,
    min_positive: int = 2,
    index: str = "auto",
    shard_rows: int | None = None,
    shard_dir: str | Path | None = None,
) -> Iterator[HardNegatives | Failure]:
    """``hard_negatives`` over a whole corpus: encodes the passages once and searches them
    with the ``index`` kind ("auto", "exact", "faiss"); without passages every query fails
    as ``no_passages``.

    Bounded memory: with ``shard_rows`` (or inside ``fingen.embed.shards.shard_settings``,
    which the executor sets from ``executor.shard_rows``) the passage vectors are written to
    .npy shards of that many rows (under ``shard_dir``) and searched shard by shard."""
    from fingen.embed.index import build_index
    from fingen.embed.shards import current_shard_settings, encode_to_shards

    if not queries:
        return
    if not passages:
        for q in queries:
            yield Failure(stage="hard_negatives", item_id=q.query_id, reason="no_passages")
        return
    settings = current_shard_settings()
    rows = shard_rows or (settings.rows if settings else None)
    if rows is not None:
        folder = shard_dir or (settings.directory if settings else None)
        with contextlib.ExitStack() as stack:
            if folder is None:
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="fingen-hn-"))
            sharded = encode_to_shards(
                embedder, (p.text for p in passages), folder, shard_rows=rows, kind="passage"
            )
            backend = "auto" if index == "auto" else index
            yield from hard_negatives(
                queries, passages, qrels, embedder=embedder, config=config,
                min_positive=min_positive, passage_vectors=sharded,
                index=sharded.as_index(backend),  # type: ignore[arg-type]
            )  # fmt: skip
        return
    vectors = embedder.encode([p.text for p in passages], kind="passage")
    yield from hard_negatives(
        queries,
        passages,
        qrels,
        embedder=embedder,
        config=config,
        min_positive=min_positive,
        passage_vectors=vectors,
        index=build_index(vectors, index),  # type: ignore[arg-type]
    )
