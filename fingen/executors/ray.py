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

import base64
import contextlib
import json
import logging
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from fingen.errors import BudgetExceeded, MissingExtraError, UserError
from fingen.executors.batch import (
    BatchContext,
    BatchStore,
    decode_lines,
    encode_records,
    input_kind,
    map_spec,
    merge_stats,
    output_model,
    stage_type,
    stats_dict,
    worker_failures,
)
from fingen.executors.local import batched, embedding_shards
from fingen.executors.storage import ShardCache, ShardStore, lines_sha, merge_shard_caches
from fingen.records import KINDS
from fingen.stages.base import TRANSIENT_REASONS, StageContext, StageSpec, StageStats

__all__ = [
    "BudgetKeeper",
    "EmbedPool",
    "PooledEmbedder",
    "RayExecutor",
    "RemoteBudget",
    "ShardJob",
    "ShardWorker",
    "run_shard",
]

DEFAULT_BATCH = 64


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError("ray[data]", "ray", "executor kind 'ray'") from exc
    return ray


# -- budget shared by the actors -----------------------------------------------------------


class BudgetKeeper:
    """The run's budget in one actor: every worker reserves and settles here."""

    def __init__(self, max_tokens: Any, max_cost: Any, spent_tokens: int, spent_cost: float):
        from fingen.llm.budget import Budget

        self.budget = Budget(max_tokens, max_cost, spent_tokens=spent_tokens, spent_cost=spent_cost)

    def reserve(self, tokens: int, cost: float) -> tuple[int, float, Any]:
        try:
            r = self.budget.reserve(tokens, cost)
        except BudgetExceeded as exc:
            return 0, 0.0, (exc.what, exc.used, exc.limit)
        return r.tokens, r.cost, None

    def settle(self, held_tokens: int, held_cost: float, tokens: int, cost: float) -> None:
        from fingen.llm.budget import Reservation

        self.budget.settle(Reservation(held_tokens, held_cost), tokens, cost)


class RemoteBudget:
    """``Budget``'s interface over a ``BudgetKeeper`` actor."""

    def __init__(self, handle: Any, max_tokens: Any = None, max_cost: Any = None) -> None:
        self.handle, self.max_tokens, self.max_cost = handle, max_tokens, max_cost
        self.spent_tokens, self.spent_cost = 0, 0.0

    @property
    def active(self) -> bool:
        return True

    def reserve(self, tokens: int, cost: float) -> Any:
        import ray

        from fingen.llm.budget import Reservation

        t, c, refused = ray.get(self.handle.reserve.remote(tokens, cost))
        if refused is not None:
            raise BudgetExceeded(*refused)
        return Reservation(t, c)

    def settle(self, reservation: Any, tokens: int = 0, cost: float = 0.0) -> None:
        self.handle.settle.remote(reservation.tokens, reservation.cost, tokens, cost)
        self.spent_tokens += tokens
        self.spent_cost += cost


# -- one shard in an actor -----------------------------------------------------------------


@dataclass
class ShardJob:
    """Everything a worker needs to run shards of one stage (pickled to the actors)."""

    config: Any
    key: str
    stage_type: str
    params: Any
    spec: StageSpec
    upstream: list[Any]
    models: dict[str, str]
    fingerprint: str
    param: str
    kind: str
    run_dir: str
    shard_url: str
    shard_format: str
    cache_dir: str
    main_cache: str
    prompts_dir: str | None = None
    keeper: Any = None
    keep: tuple[str, ...] = ()


def _error_info(exc: BaseException) -> dict[str, Any]:
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)[:2000]}
    with contextlib.suppress(Exception):  # one that does not pickle: type and message stand
        info["pickle"] = base64.b64encode(pickle.dumps(exc)).decode("ascii")
    return info


def _raise_error(info: dict[str, Any]) -> None:
    exc: BaseException | None = None
    if "pickle" in info:
        try:
            exc = pickle.loads(base64.b64decode(info["pickle"]))
        except Exception:
            exc = None
    raise exc or RuntimeError(f"{info.get('type')}: {info.get('message')}")


class _WorkerState:
    def __init__(self, job: ShardJob) -> None:
        from fingen.executors.engines import SwappableResources
        from fingen.llm.budget import Budget
        from fingen.pipeline import resolve_stage
        from fingen.prompts import set_prompt_dir

        self.job = job
        set_prompt_dir(Path(job.prompts_dir) if job.prompts_dir else None)
        limits = job.config.llm.budget
        budget = (
            RemoteBudget(job.keeper, limits.max_tokens, limits.max_cost)
            if job.keeper is not None and limits is not None
            else Budget()
        )
        self.resources = SwappableResources(job.config, budget)
        self.fn = resolve_stage(job.stage_type)
        self.shards = ShardStore(job.shard_url, job.shard_format).stage(job.key)
        self.kept: dict[str, list[Any]] = {}  # inputs every shard needs whole, read once

    def close(self) -> None:
        self.resources.close()


def run_shard(state: _WorkerState, i: int) -> dict[str, Any]:
    """Run the stage function on shard ``i``; write its outputs and marker; return the marker."""
    job = state.job
    lines = state.shards.read_input(i)
    items = list(decode_lines(lines, KINDS[job.kind][0]))
    cache = ShardCache(Path(job.cache_dir) / f"{job.key}-{i:05d}.sqlite", fallback=job.main_cache)
    state.resources.set_cache(cache)
    meter = f"{job.key}#{i:05d}"

    def get_llm(_key: str, name: str = "default", config: Any = None) -> Any:
        return state.resources.llm(meter, name, config)

    store = BatchStore(job.run_dir)
    ctx = BatchContext(
        key=job.key, store=store, config=job.config, stats=StageStats(), get_llm=get_llm,  # type: ignore[arg-type]
        get_embedder=state.resources.get_embedder, spec=job.spec, upstream=list(job.upstream),
        models=dict(job.models), fingerprint=job.fingerprint, mapped=job.param, batch=items,
        keep=job.keep, kept=state.kept,
    )  # fmt: skip
    status, error = "done", None
    try:
        state.fn(ctx, job.params)
        outputs, stats = store.outputs(), stats_dict(ctx.stats)
    except BudgetExceeded as exc:
        status, error = "budget", {"what": exc.what, "used": exc.used, "limit": exc.limit}
        outputs, stats = store.outputs(), stats_dict(ctx.stats)
    except UserError as exc:
        status, error = "error", _error_info(exc)
        outputs, stats = {}, stats_dict(StageStats())
    except Exception as exc:  # a bug or a crash in one shard: its items fail, the job goes on
        failures, stats = worker_failures(job.key, job.kind, items, exc)
        outputs = {"failures": failures}
    finally:
        state.resources.set_cache(None)
        cache.close()
    transient = sum(n for r, n in stats.get("failures", {}).items() if r in TRANSIENT_REASONS)
    _usage, by_model = state.resources.stage_usage(meter)
    meta = {
        "shard": i,
        "status": status,
        "error": error,
        "fingerprint": job.fingerprint,
        "input_sha": lines_sha(lines),
        "items": len(items),
        "outputs": sorted(outputs),
        "stats": stats,
        "transient": transient,
        "used_models": dict(ctx.used_models),
        "usage": by_model,
        "prompts": state.resources.stage_prompts(meter),
    }
    state.shards.write_outputs(i, outputs)
    state.shards.mark(i, meta)
    return meta


class ShardWorker:
    """The Ray Data UDF: one instance per actor (models built once), one shard per call."""

    def __init__(self, job: ShardJob) -> None:
        self.state = _WorkerState(job)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = [int(i) for i in batch["shard"]]
        metas = [json.dumps(run_shard(self.state, i), default=str) for i in shards]
        return {
            "shard": np.asarray(shards, dtype=np.int64),
            "meta": np.asarray(metas, dtype=object),
        }

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.state.close()


# -- embeddings by an actor pool -----------------------------------------------------------


class _EmbedActor:
    def __init__(self, model: str, batch_size: int, device: str) -> None:
        from fingen.embed.models import load_embedder

        self.embedder = load_embedder(model, batch_size=batch_size, device=device)

    def encode(self, texts: list[str], kind: str) -> np.ndarray:
        return np.asarray(self.embedder.encode(texts, kind=kind), dtype=np.float32)  # type: ignore[arg-type]


class EmbedPool:
    """Persistent embedding actors (one model load each); ``encode`` keeps input order."""

    def __init__(self, config: Any, actors: int, actor_cpus: float, chunk: int = 512) -> None:
        ray = _import_ray()
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
                _raise_error(meta["error"] or {})
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
