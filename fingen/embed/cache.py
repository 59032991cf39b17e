"""On-disk embedding cache: SQLite, keyed by sha256(model name, kind, text), float32 bytes.

`CachedEmbedder` wraps any `Embedder`: texts already in the cache are read back, only the
others are encoded (each distinct text once, in batches) and written before returning, so an
interrupted run keeps what it finished.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from fingen.embed.base import Embedder, EncodeKind, check_kind, l2_normalize

__all__ = ["CachedEmbedder", "EmbeddingCache", "cache_key"]

_SQL_CHUNK = 500  # keys per SELECT, under SQLite's bound-parameter limit


def cache_key(model: str, kind: str, text: str) -> str:
    """sha256 hex of (model name, kind, text)."""
    h = hashlib.sha256()
    for part in (model, kind, text):
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


class EmbeddingCache:
    """A key -> float32 vector store in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        with self._lock, self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vec BLOB NOT NULL)"
            )

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `keys` (missing keys are absent from the result)."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _SQL_CHUNK):
                chunk = unique[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, vec FROM embeddings WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store (key, vector) pairs in one transaction."""
        rows = [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class CachedEmbedder:
    """An `Embedder` that encodes only texts missing from an `EmbeddingCache`.

    Attributes:
        hits: texts served from the cache so far.
        misses: distinct texts encoded so far.
    """

    def __init__(
        self, embedder: Embedder, cache: EmbeddingCache | str | Path, *, flush_every: int = 4096
    ) -> None:
        self.inner = embedder
        self.cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
        self.name: str = embedder.name
        self.dim: int = embedder.dim
        self.flush_every = flush_every
        self.hits = 0
        self.misses = 0

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: EncodeKind = "passage",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Encode `texts`, reusing cached vectors; returns (n, dim) float32, L2-normalized."""
        check_kind(kind)
        items = list(texts)
        keys = [cache_key(self.name, kind, t) for t in items]
        found = {k: v for k, v in self.cache.get_many(keys).items() if v.shape == (self.dim,)}
        todo = {k: t for k, t in zip(keys, items, strict=True) if k not in found}
        self.hits += sum(1 for k in keys if k in found)
        pending = list(todo.items())
        for start in range(0, len(pending), self.flush_every):
            chunk = pending[start : start + self.flush_every]
            vectors = l2_normalize(
                self.inner.encode(
                    [t for _, t in chunk],
                    kind=kind,
                    batch_size=batch_size,
                    show_progress=show_progress,
                )
            )
            new = {k: vectors[i] for i, (k, _) in enumerate(chunk)}
            self.cache.put_many(new.items())
            found.update(new)
            self.misses += len(chunk)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
