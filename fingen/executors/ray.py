"""The Ray executor (``executor: {kind: ray}``): mapped stages run per shard in actors.

A mappable stage (``fingen.executors.batch.MAP_STAGES``) runs like this:

1. the driver streams the stage's input and cuts it into shards of ``executor.batch_size``
   records (default 64), written to the shard store (``fingen.executors.storage``); a shard
   whose marker says it is done for this fingerprint and this input is reused as it is;
2. the other shards go through Ray Data ``map_batches`` (one shard per call, input order
   kept) into an actor pool; each ``ShardWorker`` builds the run's models once from the
   pickled pipeline config (its own engine, event loop and HTTP sessions; an
   OpenAI-compatible fleet is balanced inside each actor) and runs *the stage's own
   function* on its shard, with its own request cache file, the shared budget (a
   ``BudgetKeeper`` actor when a limit is set) and the stage's failure accounting; it
   writes the shard's outputs and its marker;
3. the driver reads the shards back in order and writes the stage's usual files, counters,
   usage and prompt hashes, so later stages, the manifest and the report see what a local
   run would have written (IDs are content hashes: the rows are the same).

A row that fails is a ``Failure`` record as in a local run; a shard whose worker raised
fails every item as ``worker_error`` (retried by a re-run) instead of killing the job; a
user error (bad key, 401) stops the stage as it would locally. Every other stage runs on the
driver, with embeddings of large inputs computed by a pool of embedding actors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from fingen.errors import BudgetExceeded, MissingExtraError
from fingen.executors.batch import (
    decode_lines,
    encode_records,
    input_kind,
    map_spec,
    merge_stats,
    output_model,
    stage_type,
)
from fingen.executors.local import batched, embedding_shards
from fingen.executors.ray_budget import BudgetKeeper
from fingen.executors.ray_embed import EmbedPool, PooledEmbedder
from fingen.executors.ray_worker import ShardJob, ShardWorker, raise_shard_error
from fingen.executors.storage import ShardStore, lines_sha, merge_shard_caches
from fingen.stages.base import StageContext

__all__ = ["RayExecutor"]

DEFAULT_BATCH = 64


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError("ray[data]", "ray", "executor kind 'ray'") from exc
    return ray


# -- the executor --------------------------------------------------------------------------


class RayExecutor:
    kind = "ray"

    def __init__(self, config: Any) -> None:
        self.config = config
        self.ex = config.executor
        self._started = False
        self._ray: Any = None
        self._pool: EmbedPool | None = None

    # -- cluster ------------------------------------------------------------------------------
    def ray(self) -> Any:
        if self._ray is not None:
            return self._ray
        ray = _import_ray()
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "ignore_reinit_error": True,
                "logging_level": "ERROR",
                "log_to_driver": False,
            }
            if self.ex.address:
                ray.init(address=self.ex.address, **kwargs)
            else:  # a cluster of this machine: workers import fingen (and tests) from here
                paths = [p for p in sys.path if p and Path(p).is_dir()]
                env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys([os.getcwd(), *paths]))}
                ray.init(num_cpus=self.ex.num_cpus, runtime_env={"env_vars": env}, **kwargs)
            self._started = True
        from ray.data import DataContext

        for name in ("ray", "ray.data"):  # fingen shows its own progress
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray.data.context")
        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        self._ray = ray
        return ray

    def _actors(self, pending: int) -> int:
        if self.ex.actors:
            return max(1, min(self.ex.actors, pending))
        cpus = float(self.ray().cluster_resources().get("CPU", 1))
        return max(1, min(pending, 8, int(cpus / self.ex.actor_cpus) or 1))

    def _embed_pool(self) -> EmbedPool:
        if self._pool is None:
            self.ray()
            self._pool = EmbedPool(self.config, self._actors(8), self.ex.actor_cpus)
        return self._pool

    # -- stages -------------------------------------------------------------------------------
    def run_stage(
        self, fn: Callable[..., None], ctx: StageContext, params: Any, resources: Any
    ) -> None:
        from fingen.executors.rounds import run_in_rounds, uses_ray_llm

        main = Path(ctx.store.llm_cache_path)
        merge_shard_caches(main, main.parent / "llm")
        try:
            with embedding_shards(ctx):
                if uses_ray_llm(ctx):
                    self.ray()
                    run_in_rounds(fn, ctx, params, resources, rounds=self.ex.ray_llm_rounds)
                    return
                spec = map_spec(ctx, params)
                if spec is None:
                    base = ctx.get_embedder
                    ctx.get_embedder = lambda: PooledEmbedder(base(), self._embed_pool)
                    fn(ctx, params)
                    return
                self._sharded(ctx, params, spec, resources)
        finally:
            merge_shard_caches(main, main.parent / "llm")

    def _shard_store(self, ctx: StageContext) -> ShardStore:
        url = self.ex.shard_dir or str(Path(ctx.run_dir) / "shards")
        return ShardStore(url, self.ex.shards)

    def _plan(
        self, ctx: StageContext, params: Any, spec: Any, shards: Any
    ) -> tuple[list[tuple[int, dict[str, Any] | None, int]], Any]:
        """Cut the input into shards; a shard done before (same fingerprint, same input) is
        reused, the others are written for the workers."""
        items: Iterator[Any] = iter(ctx.input(spec.param, getattr(params, spec.param)))
        if spec.limit and getattr(params, spec.limit) is not None:
            items = islice(items, getattr(params, spec.limit))
            params = params.model_copy(update={spec.limit: None})
        plan = []
        for i, batch in enumerate(batched(items, self.ex.batch_size or DEFAULT_BATCH)):
            lines = encode_records(batch)
            marker = shards.reusable(i, ctx.fingerprint, lines_sha(lines))
            if marker is None:
                shards.write_input(i, lines)
            plan.append((i, marker, len(lines)))
        return plan, params

    def _sharded(self, ctx: StageContext, params: Any, spec: Any, resources: Any) -> None:
        store = self._shard_store(ctx)
        shards = store.stage(ctx.key)
        plan, params = self._plan(ctx, params, spec, shards)
        pending = [i for i, marker, _ in plan if marker is None]
        ctx.stats.extra["shards"] = {"total": len(plan), "reused": len(plan) - len(pending)}
        results: Iterator[dict[str, Any]] = iter(())
        if pending:
            ray = self.ray()
            keeper = None
            budget = resources.budget
            if budget.active:
                keeper = ray.remote(num_cpus=0)(BudgetKeeper).remote(
                    budget.max_tokens, budget.max_cost, budget.spent_tokens, budget.spent_cost
                )
            main = Path(ctx.store.llm_cache_path)
            cfg = ctx.config
            folder = cfg.resolve_path(cfg.prompts_dir).resolve() if cfg.prompts_dir else None
            job = ShardJob(
                config=ctx.config, key=ctx.key, stage_type=stage_type(ctx), params=params,
                spec=ctx.spec, upstream=list(ctx.upstream), models=dict(ctx.models),  # type: ignore[arg-type]
                fingerprint=ctx.fingerprint, param=spec.param, kind=input_kind(ctx, spec),
                run_dir=str(Path(ctx.run_dir).resolve()), shard_url=store.url,
                shard_format=store.fmt, cache_dir=str((main.parent / "llm").resolve()),
                main_cache=str(main.resolve()),
                prompts_dir=str(folder) if folder is not None else None, keeper=keeper,
                keep=spec.keep,
            )  # fmt: skip
            results = self._map(job, pending)
        self._collect(ctx, shards, plan, results, resources)

    def _map(self, job: ShardJob, pending: list[int]) -> Iterator[dict[str, Any]]:
        ray = self.ray()
        from ray.data import ActorPoolStrategy

        ds = ray.data.from_items([{"shard": i} for i in pending], override_num_blocks=len(pending))
        gpus: dict[str, Any] = {"num_gpus": self.ex.actor_gpus} if self.ex.actor_gpus else {}
        out = ds.map_batches(
            ShardWorker,
            fn_constructor_kwargs={"job": job},
            batch_size=1,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=self._actors(len(pending))),
            num_cpus=self.ex.actor_cpus,
            **gpus,
        )
        for row in out.iter_rows():
            yield {"shard": int(row["shard"]), **json.loads(str(row["meta"]))}

    def _collect(
        self,
        ctx: StageContext,
        shards: Any,
        plan: list[tuple[int, dict[str, Any] | None, int]],
        results: Iterator[dict[str, Any]],
        resources: Any,
    ) -> None:
        """Write the shards' outputs in order into the stage's files and add up their
        counters, usage and spend; raise what a local run would have raised."""
        progress = ctx.progress("shards", total=len(plan))
        budget_stop: dict[str, Any] | None = None
        for i, marker, _n in plan:
            meta = marker if marker is not None else next(results)
            if meta.get("shard", i) != i:
                raise RuntimeError(f"shard {meta.get('shard')} came back where {i} was expected")
            if meta["status"] == "error":
                raise_shard_error(meta["error"] or {})
            for name in meta.get("outputs", []):
                writer, model = ctx.output(name), output_model(ctx, name)
                for rec in decode_lines(shards.read_output(i, name), model):
                    writer.write(rec)
            merge_stats(ctx.stats, meta["stats"])
            ctx.used_models.update(meta.get("used_models", {}))
            if marker is None:  # work done now (a reused shard was paid for before)
                self._account(ctx, meta, resources)
            if meta["status"] == "budget":
                budget_stop = budget_stop or meta["error"]
            progress.advance()
        if budget_stop is not None:
            raise BudgetExceeded(budget_stop["what"], budget_stop["used"], budget_stop["limit"])

    @staticmethod
    def _account(ctx: StageContext, meta: dict[str, Any], resources: Any) -> None:
        budget = resources.budget
        for name, usage in (meta.get("usage") or {}).items():
            have = ctx.remote_usage.setdefault(name, {})
            for k, v in usage.items():
                have[k] = have.get(k, 0) + v
            budget.spent_tokens += int(usage.get("prompt_tokens", 0)) + int(
                usage.get("completion_tokens", 0)
            )
            budget.spent_cost += float(usage.get("cost", 0.0))
        ctx.remote_prompts.update(meta.get("prompts") or {})

    def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close()
            self._pool = None
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._started = None, False
