"""Embeddings in shards: ``.npy`` files of at most ``shard_rows`` rows, memory-mapped when
read and searched shard by shard with a running top-k, so peak memory follows the shard
size, not the corpus size.

Layout of a sharded set (``ShardedVectors``)::

    <dir>/meta.json        {"dim": 384, "rows": [100000, 100000, 4211], "sha256": ...}
    <dir>/part-00000.npy   float32 (rows, dim), L2-normalized

Search (``ShardedVectors.search``) scores a block of queries against one shard at a time
(``torch`` matmul + ``topk`` when torch is installed, else numpy; ``faiss`` on request) and
merges each shard's top-k into the running one: the result equals an exact search over the
whole corpus. Memory: one shard, one ``query_chunk x shard_rows`` score block and the
``n_queries x k`` running result.

``shard_settings(rows, directory)`` asks methods (``fingen.retrieval.negatives``, ``.mining``)
for the sharded path; the executor sets it when ``executor.shard_rows`` is set.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fingen.embed.base import l2_normalize

__all__ = [
    "SearchBackend",
    "ShardSettings",
    "ShardedIndex",
    "ShardedVectors",
    "current_shard_settings",
    "encode_to_shards",
    "shard_settings",
    "write_shards",
]

SearchBackend = Literal["auto", "exact", "torch", "faiss"]


@dataclass(frozen=True)
class ShardSettings:
    rows: int
    directory: Path


_SETTINGS: contextvars.ContextVar[ShardSettings | None] = contextvars.ContextVar(
    "fingen_embed_shards", default=None
)


@contextlib.contextmanager
def shard_settings(rows: int, directory: str | Path) -> Iterator[ShardSettings]:
    """Within the block, corpus embeddings go to shards of ``rows`` rows under ``directory``."""
    if rows < 1:
        raise ValueError(f"shard rows must be >= 1, got {rows}")
    settings = ShardSettings(rows, Path(directory))
    token = _SETTINGS.set(settings)
    try:
        yield settings
    finally:
        _SETTINGS.reset(token)


def current_shard_settings() -> ShardSettings | None:
    return _SETTINGS.get()


# -- writing ---------------------------------------------------------------------------------


def write_shards(
    blocks: Iterable[np.ndarray], directory: str | Path, *, shard_rows: int | None = None
) -> ShardedVectors:
    """Write vector blocks (each ``(n, dim)``) as shards; with ``shard_rows`` the blocks are
    re-cut to that many rows per shard (at most one shard is held at a time)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[int] = []
    dim: int | None = None
    pending: list[np.ndarray] = []
    held = 0

    def flush(arrays: list[np.ndarray]) -> None:
        block = np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32)
        np.save(out / f"part-{len(rows):05d}.npy", block)
        rows.append(int(block.shape[0]))

    for block in blocks:
        b = np.asarray(block, dtype=np.float32)
        if b.ndim != 2:
            raise ValueError(f"blocks must be 2-D (n, dim), got shape {b.shape}")
        dim = dim if dim is not None else int(b.shape[1])
        if b.shape[1] != dim:
            raise ValueError(f"block of dim {b.shape[1]} among dim {dim}")
        if shard_rows is None:
            if len(b):
                flush([b])
            continue
        while len(b):
            take = min(shard_rows - held, len(b))
            pending.append(b[:take])
            held += take
            b = b[take:]
            if held == shard_rows:
                flush(pending)
                pending, held = [], 0
    if pending:
        flush(pending)
    meta = {"dim": dim or 0, "rows": rows}
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return ShardedVectors(out)


def encode_to_shards(
    embedder: Any,
    texts: Iterable[str],
    directory: str | Path,
    *,
    shard_rows: int,
    kind: str = "passage",
) -> ShardedVectors:
    """Encode ``texts`` (streamed, ``shard_rows`` at a time) into shards under
    ``directory/<kind>-<sha>``: the same texts reuse the shards already there."""
    base = Path(directory)
    tmp = base / f".tmp-{uuid.uuid4().hex[:12]}"
    digest = hashlib.sha256(f"{getattr(embedder, 'name', '')}|{kind}".encode())

    def blocks() -> Iterator[np.ndarray]:
        batch: list[str] = []
        for text in texts:
            digest.update(text.encode("utf-8"))
            digest.update(b"\x1f")
            batch.append(text)
            if len(batch) == shard_rows:
                yield l2_normalize(embedder.encode(batch, kind=kind))
                batch = []
        if batch:
            yield l2_normalize(embedder.encode(batch, kind=kind))

    vectors = write_shards(blocks(), tmp, shard_rows=shard_rows)
    final = base / f"{kind}-{digest.hexdigest()[:16]}"
    if final.is_dir() and (final / "meta.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        return ShardedVectors(final)
    for old in base.glob(f"{kind}-*"):  # an earlier corpus of this stage: replaced
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(final)
    del vectors
    return ShardedVectors(final)


# -- reading and searching ---------------------------------------------------------------------


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


class ShardedVectors:
    """A sharded ``(n, dim)`` float32 array on disk; shards are memory-mapped one at a time."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta = json.loads((self.directory / "meta.json").read_text(encoding="utf-8"))
        self.dim = int(meta["dim"])
        self.rows = [int(r) for r in meta["rows"]]
        self.offsets = np.concatenate([[0], np.cumsum(self.rows)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.dim

    @property
    def ndim(self) -> int:
        return 2

    def path(self, s: int) -> Path:
        return self.directory / f"part-{s:05d}.npy"

    def shard(self, s: int) -> np.ndarray:
        """Shard ``s`` memory-mapped (copy-on-write, so torch can wrap it without a copy)."""
        return np.load(self.path(s), mmap_mode="c")

    def shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, shard)`` for every shard; each mapping is dropped after use."""
        for s in range(len(self.rows)):
            yield int(self.offsets[s]), self.shard(s)

    def __getitem__(self, index: Any) -> np.ndarray:
        """Rows by position (an int, or a sequence/array of ints), in the order asked."""
        if isinstance(index, (int, np.integer)):
            return self[[int(index)]][0]
        ids = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if not len(ids):
            return out
        if ids.min() < 0 or ids.max() >= len(self):
            raise IndexError(f"row index out of range 0..{len(self) - 1}")
        which = np.searchsorted(self.offsets, ids, side="right") - 1
        for s in np.unique(which):
            sel = np.nonzero(which == s)[0]
            shard = self.shard(int(s))
            out[sel] = shard[ids[sel] - self.offsets[s]]
            del shard
        return out

    def to_array(self) -> np.ndarray:
        """The whole array in memory (for small sets and tests)."""
        if not self.rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([np.asarray(a) for _, a in self.shards()])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        backend: SearchBackend = "auto",
        query_chunk: int = 256,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` rows per query by inner product: (scores, global row indices),
        best first, ``k`` capped at the number of rows."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or (len(self) and q.shape[1] != self.dim):
            raise ValueError(f"queries must have shape (n, {self.dim}), got {q.shape}")
        k = max(0, min(k, len(self)))
        best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        best_i = np.full((len(q), k), -1, dtype=np.int64)
        if k == 0 or not len(q):
            return best_s, best_i
        torch = _torch() if backend in ("auto", "torch") else None
        if backend == "torch" and torch is None:
            from fingen.errors import MissingExtraError

            raise MissingExtraError("torch", "embed", "torch shard search")
        for offset, shard in self.shards():
            if backend == "faiss":
                s_scores, s_idx = _faiss_search(shard, q, k)
            elif torch is not None:
                s_scores, s_idx = _torch_search(torch, shard, q, k, query_chunk)
            else:
                s_scores, s_idx = _numpy_search(shard, q, k, query_chunk)
            del shard
            best_s, best_i = _merge(best_s, best_i, s_scores, s_idx + offset, k)
        return best_s, best_i

    def as_index(self, backend: SearchBackend = "auto") -> ShardedIndex:
        return ShardedIndex(self, backend)


class ShardedIndex:
    """``VectorIndex`` over a ``ShardedVectors`` (what mining and hard negatives call)."""

    def __init__(self, vectors: ShardedVectors, backend: SearchBackend = "auto") -> None:
        self.vectors, self.backend = vectors, backend
        self.dim = vectors.dim

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.vectors.search(queries, k, backend=self.backend)


def _merge(
    best_s: np.ndarray, best_i: np.ndarray, new_s: np.ndarray, new_i: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The running top-k merged with a shard's (ties: the earlier row first)."""
    scores = np.concatenate([best_s, new_s], axis=1)
    index = np.concatenate([best_i, new_i], axis=1)
    # order by score descending, then by row ascending (stable, reproducible)
    key_rows = np.where(index < 0, np.iinfo(np.int64).max, index)
    order = np.lexsort((key_rows, -scores.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(index, order, axis=1)


def _numpy_search(
    shard: np.ndarray, q: np.ndarray, k: int, query_chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    from fingen.embed.index import ExactIndex

    index = ExactIndex(np.asarray(shard), query_chunk=query_chunk)
    return index.search(q, k)


def _torch_search(
    torch: Any, shard: np.ndarray, q: np.ndarray, k: int, query_chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    kk = min(k, len(shard))
    corpus = torch.from_numpy(shard)
    scores = np.zeros((len(q), kk), dtype=np.float32)
    index = np.zeros((len(q), kk), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(q), query_chunk):
            block = torch.from_numpy(q[start : start + query_chunk])
            values, rows = torch.topk(block @ corpus.T, kk, dim=1)
            scores[start : start + len(block)] = values.numpy()
            index[start : start + len(block)] = rows.numpy()
    return scores, index


def _faiss_search(shard: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from fingen.embed.index import FaissIndex

    return FaissIndex(np.asarray(shard)).search(q, k)


def gather(vectors: Any, ids: Sequence[int]) -> np.ndarray:
    """Rows ``ids`` of an in-memory array or a ``ShardedVectors``, as float32."""
    if isinstance(vectors, ShardedVectors):
        return vectors[list(ids)]
    return np.asarray(vectors, dtype=np.float32)[list(ids)]
