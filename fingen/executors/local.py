"""The local executor: stages run in this process.

Without ``executor.batch_size`` a stage runs exactly as it always did (its function over its
whole input). With it, a mappable stage (``MAP_STAGES``) streams: its input is read lazily
and the stage function runs once per batch of that many records, writing straight into the
stage's files, so the stage holds one batch, not its whole input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from fingen.executors.batch import batch_context, map_spec, merge_stats, stats_dict
from fingen.stages.base import StageContext

__all__ = ["LocalExecutor", "batched", "embedding_shards"]


def batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(islice(items, size)):
        yield batch


@contextlib.contextmanager
def embedding_shards(ctx: StageContext) -> Iterator[None]:
    """``executor.shard_rows`` set: the stage's embeddings go to .npy shards (bounded memory)
    under ``<run>/cache/shards/<stage>`` (see ``fingen.embed.shards``)."""
    rows = ctx.config.executor.shard_rows
    if rows is None:
        yield
        return
    from fingen.embed.shards import shard_settings

    with shard_settings(rows, Path(ctx.run_dir) / "cache" / "shards" / ctx.key):
        yield


class _ForwardStore:
    """A batch's writers are the stage's own (its files), so batches append in order."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx, self.root = ctx, ctx.store.root

    def writer(self, stage: str, output: str = "") -> Any:
        return self.ctx.output(output)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ctx.store, name)


class LocalExecutor:
    kind = "local"

    def __init__(self, config: Any) -> None:
        self.config = config
        self.batch_size: int | None = config.executor.batch_size

    def run_stage(
        self, fn: Callable[..., None], ctx: StageContext, params: Any, resources: Any
    ) -> None:
        from fingen.executors.rounds import run_in_rounds, uses_ray_llm
        from fingen.executors.storage import merge_shard_caches

        store = ctx.store
        merge_shard_caches(store.llm_cache_path, Path(store.llm_cache_path).parent / "llm")
        with embedding_shards(ctx):
            if uses_ray_llm(ctx):
                run_in_rounds(
                    fn, ctx, params, resources, rounds=self.config.executor.ray_llm_rounds
                )
                return
            spec = map_spec(ctx, params)
            if self.batch_size is None or spec is None:
                fn(ctx, params)
                return
            self._streamed(fn, ctx, params, spec)

    def _streamed(self, fn: Callable[..., None], ctx: StageContext, params: Any, spec: Any) -> None:
        items: Iterator[Any] = iter(ctx.input(spec.param, getattr(params, spec.param)))
        limit = getattr(params, spec.limit) if spec.limit else None
        if limit is not None:
            items = islice(items, limit)
            params = params.model_copy(update={spec.limit: None})
        progress = ctx.progress(spec.param)
        store = _ForwardStore(ctx)
        kept: dict[str, list[Any]] = {}
        assert self.batch_size is not None
        for batch in batched(items, self.batch_size):
            bctx = batch_context(
                ctx, store=store, mapped=spec.param, batch=batch, progress=progress,
                keep=spec.keep, kept=kept,
            )  # fmt: skip
            try:
                fn(bctx, params)
            finally:
                merge_stats(ctx.stats, stats_dict(bctx.stats))
                ctx.used_models.update(bctx.used_models)

    def close(self) -> None:
        return None
