"""Executors: where a stage's work runs (``executor:`` in the pipeline).

``local`` (default): in this process, as always; with ``executor.batch_size`` a mappable
stage streams its input in batches. ``ray``: mappable stages (``batch.MAP_STAGES``) run per
shard in Ray actors, the same stage function in each; the others run on the driver. Both
run stages whose model is ``backend: ray_llm`` in rounds (``fingen.executors.rounds``).

An executor has ``run_stage(fn, ctx, params, resources)`` and ``close()``; the runner calls
``run_stage`` where it used to call ``fn(ctx, params)``.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Executor", "make_executor"]


class Executor(Protocol):
    kind: str

    def run_stage(self, fn: Any, ctx: Any, params: Any, resources: Any) -> None: ...

    def close(self) -> None: ...


def make_executor(config: Any) -> Executor:
    """The executor ``config.executor.kind`` names (Ray is imported only when chosen)."""
    if config.executor.kind == "ray":
        from fingen.executors.ray import RayExecutor

        return RayExecutor(config)
    from fingen.executors.local import LocalExecutor

    return LocalExecutor(config)
