"""Embeddings of large inputs by a pool of Ray actors, one model load each, behind the run's
``Embedder`` interface (and its embedding cache)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["EmbedPool", "PooledEmbedder"]


class _EmbedActor:
    def __init__(self, model: str, batch_size: int, device: str) -> None:
        from fingen.embed.models import load_embedder

        self.embedder = load_embedder(model, batch_size=batch_size, device=device)

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        return np.asarray(self.embedder.encode(texts, kind=kind), dtype=np.float32)  # type: ignore[arg-type]


class EmbedPool:
    """Persistent embedding actors (one model load each); ``encode`` keeps input order."""

    def __init__(self, config: Any, actors: int, actor_cpus: float, chunk: int = 512) -> None:
        import ray

        ec = config.embedder
        remote = ray.remote(num_cpus=actor_cpus)(_EmbedActor)
        self.actors = [
            remote.remote(ec.model or "minilm", ec.batch_size, ec.device) for _ in range(actors)
        ]
        self.chunk = chunk

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        import ray

        chunks = [texts[s : s + self.chunk] for s in range(0, len(texts), self.chunk)]
        refs = [
            self.actors[j % len(self.actors)].encode.remote(c, kind) for j, c in enumerate(chunks)
        ]
        parts = ray.get(refs)
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


class PooledEmbedder:
    """The run's embedder, with large inputs encoded by an ``EmbedPool`` (the run's
    embedding cache, when it has one, still answers what it knows)."""

    def __init__(self, base: Any, pool: Callable[[], EmbedPool], min_rows: int = 2048) -> None:
        self.base, self._pool, self.min_rows = base, pool, min_rows

    @property
    def name(self) -> str:
        return str(self.base.name)

    @property
    def dim(self) -> int:
        return int(self.base.dim)

    def encode(
        self,
        texts: Any,
        *,
        kind: str = "passage",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        from fingen.embed.base import l2_normalize
        from fingen.embed.cache import EmbeddingCache, cache_key

        items = list(texts)
        if len(items) < self.min_rows:
            return self.base.encode(items, kind=kind, batch_size=batch_size)  # type: ignore[no-any-return]
        cache = getattr(self.base, "cache", None)
        if not isinstance(cache, EmbeddingCache):
            return l2_normalize(self._pool().encode(items, kind))
        keys = [cache_key(self.name, kind, t) for t in items]
        found = {k: v for k, v in cache.get_many(keys).items() if v.shape == (self.dim,)}
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        if todo:
            text_of = dict(zip(keys, items, strict=True))
            vectors = l2_normalize(self._pool().encode([text_of[k] for k in todo], kind))
            new = {k: vectors[j] for j, k in enumerate(todo)}
            cache.put_many(new.items())
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
