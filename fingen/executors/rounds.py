"""Stages whose model is ``backend: ray_llm`` run in rounds (see ``fingen.llm.ray_llm``):
probe runs of the stage collect the requests the cache cannot answer, a ``ray.data.llm``
processor answers them into the run's request cache, and a last run of the same stage
function writes the outputs from the cache. Only stages that call a model run in rounds."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fingen.errors import BudgetExceeded
from fingen.executors.batch import BatchStore, batch_context, stage_type
from fingen.executors.engines import SwappableResources
from fingen.executors.storage import ShardCache
from fingen.stages.base import StageContext

__all__ = ["LLM_STAGES", "run_in_rounds", "uses_ray_llm"]

#: Stage types that may send requests (others run once, as usual).
LLM_STAGES = frozenset(
    {"bottom_up", "titles", "topics", "top_down", "mine", "synthesize", "distill", "verify"}
    | {"judge_reasoning", "annotate"}
)


def uses_ray_llm(ctx: StageContext) -> bool:
    if stage_type(ctx) not in LLM_STAGES:
        return False
    names = set(ctx.models.values())
    return any(ctx.config.model_config_for(n).backend == "ray_llm" for n in names)


def run_in_rounds(
    fn: Callable[..., None],
    ctx: StageContext,
    params: Any,
    resources: Any,
    *,
    rounds: int,
    run_rows: Callable[..., list[dict[str, Any]]] | None = None,
) -> None:
    """Probe, answer, repeat (at most ``rounds - 1`` probes), then run the stage for real."""
    from fingen.llm import ray_llm
    from fingen.llm.budget import Budget
    from fingen.llm.cache import RequestCache

    ray_llm.reset_round_state()
    main = Path(ctx.store.llm_cache_path)
    cache = RequestCache(main)
    try:
        with tempfile.TemporaryDirectory(prefix="fingen-rounds-") as tmp:
            for r in range(rounds - 1):
                probe = SwappableResources(ctx.config, Budget())
                view = ShardCache(Path(tmp) / f"probe-{r}.sqlite", fallback=main)
                probe.set_cache(view)  # reads the run's cache; forgets only in the probe
                pctx = batch_context(ctx, store=BatchStore(ctx.run_dir), get_llm=probe.llm)
                try:
                    fn(pctx, params)
                except BudgetExceeded:
                    pass
                finally:
                    deferred = {
                        name: e.backend.take()
                        for name, e in probe.engines.items()
                        if isinstance(e.backend, ray_llm.DeferredBackend)
                    }
                    probe.close()
                    view.close()
                if not any(deferred.values()):
                    break
                for name, requests in deferred.items():
                    if not requests:
                        continue
                    report = ray_llm.prefill(
                        requests,
                        ctx.config.model_config_for(name),
                        cache,
                        resources.budget,
                        run_rows,
                    )
                    usage = ctx.remote_usage.setdefault(name, {})
                    for k, v in report.usage().items():
                        usage[k] = usage.get(k, 0) + v
                    rounds_done = ctx.stats.extra.setdefault("ray_llm_rounds", 0)
                    ctx.stats.extra["ray_llm_rounds"] = rounds_done + 1
                    if report.errors:
                        ctx.stats.extra.setdefault("ray_llm_errors", 0)
                        ctx.stats.extra["ray_llm_errors"] += report.errors
    finally:
        cache.close()
    fn(ctx, params)
