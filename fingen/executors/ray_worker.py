"""One shard of a mapped stage inside a Ray actor: the pickled job, the worker's models
(built once per actor) and ``run_shard``, which runs the stage's own function on the shard and
writes its outputs and marker."""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fingen.errors import BudgetExceeded, UserError
from fingen.executors.batch import (
    BatchContext,
    BatchStore,
    decode_lines,
    stats_dict,
    worker_failures,
)
from fingen.executors.ray_budget import RemoteBudget
from fingen.executors.storage import ShardCache, ShardStore, lines_sha
from fingen.records import KINDS
from fingen.stages.base import TRANSIENT_REASONS, StageSpec, StageStats

__all__ = ["ShardJob", "ShardWorker", "raise_shard_error", "run_shard"]


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


def raise_shard_error(info: dict[str, Any]) -> None:
    """Raise the exception a worker reported for its shard (the original when it unpickles)."""
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
