"""A stage run over one batch (shard) of its input: the same stage function, the same
method call, a context whose mapped input is the batch and whose outputs are captured.

Which stages can be mapped is declared in ``MAP_STAGES`` (stage type -> ``MapSpec``): the
stage's output for a list of records is the concatenation of its outputs for the parts of
that list, in order, and its counters add up. Both executors use this module: the local one
to stream a stage in batches (``executor.batch_size``), the Ray one to run shards in actors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fingen.files import iter_jsonl, safe_join
from fingen.records import KINDS, Failure, record_key
from fingen.stages.base import Progress, StageContext, StageStats

__all__ = [
    "MAP_STAGES",
    "BatchContext",
    "BatchStore",
    "MapSpec",
    "MemoryWriter",
    "batch_context",
    "decode_lines",
    "encode_records",
    "map_spec",
    "merge_stats",
    "output_model",
    "stats_dict",
    "worker_failures",
]


@dataclass(frozen=True)
class MapSpec:
    """How a stage maps over one of its inputs.

    Args:
        param: the input param whose records are split into batches.
        limit: a param keeping the first N records of that input; the driver applies it
            before splitting (the batches run with it unset).
        limit_ok: False when that limit is not a prefix of the input (e.g. top_down's limit
            counts split clusters): with it set, the stage runs whole, unmapped.
        keep: other inputs read once per worker and kept for its later batches (a lookup
            table every batch needs whole, e.g. the QA items of the samples being judged).
    """

    param: str
    limit: str | None = None
    limit_ok: bool = True
    keep: tuple[str, ...] = ()


#: Stage type -> how it maps. Every other stage runs whole (on the driver under Ray).
MAP_STAGES: dict[str, MapSpec] = {
    "chunk": MapSpec("input"),
    "bottom_up": MapSpec("passages", "limit"),
    "titles": MapSpec("documents"),
    "top_down": MapSpec("clusters", "limit", limit_ok=False),
    "synthesize": MapSpec("input", "limit"),
    "distill": MapSpec("input", "limit"),
    "verify": MapSpec("input", keep=("items",)),
    "judge_reasoning": MapSpec("input", keep=("items",)),
}


def stage_type(ctx: StageContext) -> str:
    for sc in ctx.config.stages:
        if sc.key == ctx.key:
            return sc.stage
    return ctx.key


def map_spec(ctx: StageContext, params: Any) -> MapSpec | None:
    """The stage's ``MapSpec`` when it can run in batches with these params, else None."""
    spec = MAP_STAGES.get(stage_type(ctx))
    if spec is None or ctx.spec is None or spec.param not in ctx.spec.inputs:
        return None
    if spec.limit and not spec.limit_ok and getattr(params, spec.limit, None) is not None:
        return None
    return spec


def input_kind(ctx: StageContext, spec: MapSpec) -> str:
    assert ctx.spec is not None
    return ctx.spec.inputs[spec.param].rstrip("?")


def output_model(ctx: StageContext, name: str) -> type[BaseModel] | None:
    """The record model of output ``name`` (failures: ``Failure``; plain kinds: None)."""
    if name == "failures":
        return Failure
    if ctx.spec is not None and name in ctx.spec.outputs:
        return KINDS[ctx.spec.output_kind(name)[0]][0]
    return None


def encode_records(records: Iterable[Any]) -> list[str]:
    """Records (pydantic or plain dicts) as JSON lines, exactly as a stage file holds them."""
    return [
        r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, ensure_ascii=False)
        for r in records
    ]


def decode_lines(lines: Iterable[str], model: type[BaseModel] | None) -> Iterator[Any]:
    for line in lines:
        yield model.model_validate_json(line) if model is not None else json.loads(line)


class MemoryWriter:
    """A stage output kept in memory as JSON lines (what ``JsonlWriter`` would write)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.rows = 0

    def write(self, record: BaseModel | dict[str, Any]) -> None:
        self.lines.extend(encode_records([record]))
        self.rows += 1

    def write_all(self, records: Iterable[BaseModel | dict[str, Any]]) -> int:
        for r in records:
            self.write(r)
        return self.rows

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


class BatchStore:
    """A ``RunStore`` stand-in for one batch: reads the run directory, writes into memory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.writers: dict[str, MemoryWriter] = {}

    def writer(self, stage: str, output: str = "") -> MemoryWriter:
        return self.writers.setdefault(output, MemoryWriter())

    def stage_path(self, stage: str, output: str = "") -> Path:
        name = f"{stage}.{output}.jsonl" if output else f"{stage}.jsonl"
        return safe_join(self.root, name)

    def path(self, relative: str | Path) -> Path:
        return safe_join(self.root, relative)

    def read(self, stage: str, output: str = "", model: Any = None) -> Iterator[Any]:
        return iter_jsonl(self.stage_path(stage, output), model)

    def outputs(self) -> dict[str, list[str]]:
        return {name: w.lines for name, w in self.writers.items()}


@dataclass
class BatchContext(StageContext):
    """A stage's context for one batch: input ``mapped`` is ``batch``; the rest as usual."""

    mapped: str | None = None
    batch: list[Any] = field(default_factory=list)
    shared_progress: Progress | None = None
    keep: tuple[str, ...] = ()
    kept: dict[str, list[Any]] | None = None  # inputs in ``keep``, shared by the batches

    def input(self, param: str, refs: str | list[str] | None) -> Iterator[Any]:
        if param == self.mapped:
            return iter(self.batch)
        if param in self.keep and self.kept is not None:
            key = f"{param}|{json.dumps(refs)}"
            if key not in self.kept:
                self.kept[key] = list(super().input(param, refs))
            return iter(self.kept[key])
        return super().input(param, refs)

    def progress(self, description: str, total: int | None = None) -> Progress:
        return self.shared_progress or Progress()


def batch_context(
    ctx: StageContext,
    *,
    store: Any,
    get_llm: Callable[..., Any] | None = None,
    get_embedder: Callable[[], Any] | None = None,
    mapped: str | None = None,
    batch: list[Any] | None = None,
    progress: Progress | None = None,
    keep: tuple[str, ...] = (),
    kept: dict[str, list[Any]] | None = None,
) -> BatchContext:
    """A batch context like ``ctx`` (same config, spec, upstream files and models)."""
    return BatchContext(
        key=ctx.key,
        store=store,
        config=ctx.config,
        stats=StageStats(),
        get_llm=get_llm or ctx.get_llm,
        get_embedder=get_embedder or ctx.get_embedder,
        spec=ctx.spec,
        upstream=list(ctx.upstream),
        models=dict(ctx.models),
        fingerprint=ctx.fingerprint,
        mapped=mapped,
        batch=list(batch or []),
        shared_progress=progress,
        keep=keep,
        kept=kept,
    )


def stats_dict(stats: StageStats) -> dict[str, Any]:
    """A stage's raw counters as plain JSON (``merge_stats`` adds them up)."""
    return {
        "inputs": stats.inputs,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "rejected_rows": stats.rejected_rows,
        "cached": stats.cached,
        "failures": dict(stats.failures),
        "skipped": dict(stats.skipped),
        "extra": stats.extra,
    }


def _merge_extra(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        have = into.get(key)
        if key not in into:
            into[key] = json.loads(json.dumps(value, default=str))
        elif isinstance(have, dict) and isinstance(value, dict):
            _merge_extra(have, value)
        elif (
            isinstance(have, (int, float))
            and isinstance(value, (int, float))
            and not isinstance(have, bool)
            and not isinstance(value, bool)
        ) or (isinstance(have, list) and isinstance(value, list)):
            into[key] = have + value
        # anything else (a name, a flag): the first batch's value stands


def merge_stats(into: StageStats, part: dict[str, Any]) -> None:
    """Add one batch's counters (``stats_dict``) to the stage's."""
    into.inputs += int(part.get("inputs", 0))
    into.succeeded += int(part.get("succeeded", 0))
    into.failed += int(part.get("failed", 0))
    into.rejected_rows += int(part.get("rejected_rows", 0))
    into.cached += int(part.get("cached", 0))
    into.failures.update(part.get("failures", {}))
    into.skipped.update(part.get("skipped", {}))
    _merge_extra(into.extra, part.get("extra", {}))


def worker_failures(
    key: str, kind: str, items: list[Any], exc: BaseException
) -> tuple[list[str], dict[str, Any]]:
    """A batch whose run raised: every item fails as ``worker_error`` (a re-run retries it).

    Returns the failure lines and the batch's counters."""
    from fingen.redact import redact

    detail = redact(f"{type(exc).__name__}: {exc}")[:500]
    failures = []
    for item in items:
        ident = record_key(kind, item) if KINDS[kind][1] else None
        item_id = "/".join(map(str, ident)) if ident else ""
        failures.append(Failure(stage=key, item_id=item_id, reason="worker_error", detail=detail))
    stats = {
        "inputs": len(items),
        "failed": len(items),
        "failures": {"worker_error": len(items)} if items else {},
    }
    return encode_records(failures), stats
