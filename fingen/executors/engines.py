"""Engines whose request cache the executor chooses (one cache file per shard, or a
read-only view of the run's cache), built from the picklable pipeline config."""

from __future__ import annotations

from typing import Any

from fingen.resources import Resources

__all__ = ["SwappableResources", "uses_cache"]


class _NoStore:
    """Resources' store when the executor sets every engine's cache itself."""

    llm_cache_path = None
    embed_cache_path = None


def uses_cache(config: Any) -> bool:
    """Whether an engine of this model keeps answers (as ``build_engine`` decides)."""
    return bool(config.cache and config.backend != "fake")


class SwappableResources(Resources):
    """The run's models like ``Resources``, with the request cache set by ``set_cache``
    (every engine, and every engine created later, uses it); the embedder keeps no cache."""

    def __init__(self, config: Any, budget: Any = None) -> None:
        super().__init__(config, _NoStore(), budget)
        self.cache: Any = None

    def set_cache(self, cache: Any) -> None:
        self.cache = cache
        for engine in self.engines.values():
            engine.cache = cache if uses_cache(engine.config) else None

    def llm(self, stage_key: str, name: str = "default", config: Any = None) -> Any:
        view = super().llm(stage_key, name, config)
        root = self.engines[name]
        want = self.cache if uses_cache(root.config) else None
        if root.cache is not want:
            root.cache = want
            view = root.for_stage(stage_key)
        return view

    def close(self) -> None:
        for engine in self.engines.values():
            engine.cache = None  # the executor closes its caches
        super().close()
