"""Dense top-k search by inner product (cosine on normalized vectors).

`ExactIndex` is numpy only and never builds a full query x corpus score matrix: it walks the
corpus in chunks and keeps a running top-k. `FaissIndex` wraps a flat inner-product faiss
index when faiss is installed. Both return `(scores, indices)`, shape `(n_queries, k)`,
best first, with `k` capped at the corpus size.
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

import numpy as np

from fingen.errors import MissingExtraError

__all__ = ["Backend", "ExactIndex", "FaissIndex", "VectorIndex", "build_index", "top_k"]

Backend = Literal["auto", "exact", "faiss"]


class VectorIndex(Protocol):
    dim: int

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-`k` of a 2-D score matrix: (scores, column indices), best first."""
    n = scores.shape[1]
    k = min(k, n)
    if k <= 0:
        empty = np.zeros((scores.shape[0], 0))
        return empty.astype(scores.dtype), empty.astype(np.int64)
    if k < n:
        idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        idx = np.broadcast_to(np.arange(n), scores.shape)
    part = np.take_along_axis(scores, idx, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(idx, order, axis=1).astype(
        np.int64
    )


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (n, {dim}), got {np.shape(queries)}")
    return np.ascontiguousarray(q)


def _as_corpus(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, dim), got shape {v.shape}")
    return v


class ExactIndex:
    """Brute-force inner-product search in bounded memory.

    Peak extra memory is about `query_chunk * corpus_chunk` floats (16 MB by default), so a
    1M x 384 corpus is searched without a 1M-wide score matrix.
    """

    def __init__(
        self, vectors: np.ndarray, *, corpus_chunk: int = 16384, query_chunk: int = 256
    ) -> None:
        self.vectors = _as_corpus(vectors)
        self.dim = int(self.vectors.shape[1])
        self.corpus_chunk = corpus_chunk
        self.query_chunk = query_chunk

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` corpus rows per query: (scores float32, indices int64), best first."""
        q = _as_queries(queries, self.dim)
        k = max(0, min(k, len(self)))
        scores = np.zeros((len(q), k), dtype=np.float32)
        indices = np.zeros((len(q), k), dtype=np.int64)
        if k == 0:
            return scores, indices
        for qs in range(0, len(q), self.query_chunk):
            block = q[qs : qs + self.query_chunk]
            best_s = np.zeros((len(block), 0), dtype=np.float32)
            best_i = np.zeros((len(block), 0), dtype=np.int64)
            for cs in range(0, len(self), self.corpus_chunk):
                chunk_s, chunk_i = top_k(block @ self.vectors[cs : cs + self.corpus_chunk].T, k)
                merged_s = np.concatenate([best_s, chunk_s], axis=1)
                merged_i = np.concatenate([best_i, chunk_i + cs], axis=1)
                best_s, pick = top_k(merged_s, k)
                best_i = np.take_along_axis(merged_i, pick, axis=1)
            scores[qs : qs + len(block)] = best_s
            indices[qs : qs + len(block)] = best_i
        return scores, indices


class FaissIndex:
    """A faiss `IndexFlatIP` (exact inner product, multi-threaded)."""

    def __init__(self, vectors: np.ndarray) -> None:
        try:
            import faiss
        except ImportError as exc:
            raise MissingExtraError("faiss-cpu", "faiss", "FaissIndex") from exc
        v = _as_corpus(vectors)
        self.dim = int(v.shape[1])
        self._index = faiss.IndexFlatIP(self.dim)
        self._index.add(v)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` corpus rows per query: (scores float32, indices int64), best first."""
        q = _as_queries(queries, self.dim)
        k = max(0, min(k, len(self)))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        scores, indices = self._index.search(q, k)
        return scores.astype(np.float32, copy=False), indices.astype(np.int64, copy=False)


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def build_index(vectors: np.ndarray, backend: Backend = "auto") -> VectorIndex:
    """An index over `vectors`: "faiss", "exact", or "auto" (faiss when importable).

    Raises:
        ValueError: unknown backend (the message lists the allowed values).
        MissingExtraError: backend "faiss" without faiss installed.
    """
    if backend not in get_args(Backend):
        raise ValueError(f"backend must be one of {get_args(Backend)}, got {backend!r}")
    if backend == "faiss" or (backend == "auto" and _faiss_available()):
        return FaissIndex(vectors)
    return ExactIndex(vectors)
