"""The runner: wires the stages named in a pipeline YAML and records everything in the manifest.

Stages are looked up in ``STAGES`` (name -> "module:function", imported only when used).
A stage that finished with the same fingerprint (``fingen.fingerprint``) is skipped on a
re-run; everything else re-runs, and the request cache makes already-answered LLM requests
free. Each stage's outputs are recorded with their record kinds, which is how later stages
and ``fingen.run`` find "the run's records of a kind".
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fingen.config import PipelineConfig, parse_params
from fingen.errors import BudgetExceeded, ConfigError, Interrupted
from fingen.executors import Executor, make_executor
from fingen.fingerprint import stage_fingerprint
from fingen.manifest import summary_rows, totals, versions
from fingen.redact import redact, redacted_config
from fingen.resources import (
    Resources,
    budget_entry,
    carried_budget,
    model_entry,
    self_judged,
    stage_models,
)
from fingen.run import OutputFile
from fingen.stages.base import (
    Progress,
    StageContext,
    StageSpec,
    StageStats,
    output_files,
    spec_of,
)

__all__ = [
    "STAGES",
    "RunResult",
    "default_run_dir",
    "redacted_config",
    "resolve_stage",
    "run_pipeline",
    "summary_rows",
    "validate_pipeline",
]

STAGES: dict[str, str] = {
    "ingest": "fingen.stages.ingest:ingest",
    "chunk": "fingen.stages.ingest:chunk",
    "bottom_up": "fingen.stages.retrieval:bottom_up",
    "titles": "fingen.stages.retrieval:titles",
    "topics": "fingen.stages.retrieval:topics",
    "top_down": "fingen.stages.retrieval:top_down",
    "mine": "fingen.stages.relevance:mine",
    "filter": "fingen.stages.relevance:filter_queries",
    "hard_negatives": "fingen.stages.relevance:hard_negatives",
    "export_retrieval": "fingen.stages.export_retrieval:export_retrieval",
    "evaluate": "fingen.stages.export_retrieval:evaluate",
    "train": "fingen.stages.train:train",
    "qa_source": "fingen.stages.reasoning:qa_source",
    "synthesize": "fingen.stages.reasoning:synthesize",
    "distill": "fingen.stages.reasoning:distill",
    "verify": "fingen.stages.reasoning:verify",
    "judge_reasoning": "fingen.stages.reasoning:judge_reasoning",
    "route": "fingen.stages.reasoning:route",
    "preference": "fingen.stages.reasoning:preference",
    "annotate": "fingen.stages.annotate:annotate",
    "export_training": "fingen.stages.export_training:export_training",
    "report": "fingen.stages.report:report",
}
# Stages run once more after the run, on the final manifest (what they show is the finished run).
FINALIZERS = {"report"}


def resolve_stage(name: str) -> Callable[..., None]:
    """Import the stage function registered as ``name``."""
    try:
        target = STAGES[name]
    except KeyError:
        raise ConfigError(
            f"unknown stage '{name}'; known stages: {', '.join(sorted(STAGES))}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def _check_inputs(config: PipelineConfig, specs: list[StageSpec], params: list[Any]) -> None:
    """Every stage's inputs are produced by a stage before it (or named explicitly)."""
    produced: dict[str, set[str]] = {}  # kind -> refs
    later = {sc.key for sc in config.stages}
    for sc, spec, p in zip(config.stages, specs, params, strict=True):
        later.discard(sc.key)
        where = f"stages.{sc.key}.params"
        for param, declared in spec.inputs.items():
            kind, optional = declared.rstrip("?"), declared.endswith("?")
            refs = getattr(p, param, None)
            if refs is None:
                if not optional and not produced.get(kind):
                    raise ConfigError(
                        f"'{param}': no earlier stage produces {kind} records; add one "
                        f"before '{sc.key}' or name the input", where=where,
                    )  # fmt: skip
                continue
            for ref in [refs] if isinstance(refs, str) else refs:
                stage_key = ref.partition(".")[0]
                if stage_key in later:  # other names may be files of an earlier run
                    raise ConfigError(
                        f"'{param}': '{ref}' is written by a later stage", where=where
                    )
        for name in spec.outputs:
            kind = spec.output_kind(name)[0]
            produced.setdefault(kind, set()).add(f"{sc.key}.{name}" if name else sc.key)


def validate_pipeline(config: PipelineConfig) -> list[Any]:
    """Check every stage name, its params and its inputs; returns the parsed params."""
    parsed, specs = [], []
    for i, sc in enumerate(config.stages):
        spec = spec_of(resolve_stage(sc.stage))
        parsed.append(parse_params(spec.params_model, sc.params, f"stages[{i}] ({sc.key}).params"))
        specs.append(spec)
    _check_inputs(config, specs, parsed)
    for sc, p in zip(config.stages, parsed, strict=True):
        for param, path in p.input_paths():
            if not config.resolve_path(path).exists():
                raise ConfigError(
                    f"file not found: {path}", where=f"stages.{sc.key}.params.{param}"
                )
    return parsed


def default_run_dir(config: PipelineConfig, base: str | Path = "outputs") -> Path:
    return Path(base) / config.name / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


@dataclass
class RunResult:
    run_dir: Path
    manifest: dict[str, Any]
    status: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


def _context(
    config: PipelineConfig,
    index: int,
    store: Any,
    resources: Resources,
    specs: list[StageSpec],
    make_progress: Callable[[str, int | None], Progress] | None = None,
) -> StageContext:
    sc = config.stages[index]
    upstream: list[OutputFile] = []
    for earlier, spec in zip(config.stages[:index], specs[:index], strict=True):
        upstream += output_files(store.root, earlier.key, earlier.stage, spec)
    return StageContext(
        key=sc.key,
        store=store,
        config=config,
        stats=StageStats(),
        get_llm=resources.llm,
        get_embedder=resources.get_embedder,
        make_progress=make_progress or (lambda d, t: Progress()),
        spec=specs[index],
        upstream=upstream,
        models=stage_models(config, index, specs[index]),
    )


def run_pipeline(
    config: PipelineConfig,
    run_dir: str | Path | None = None,
    *,
    progress_factory: Callable[[str, int | None], Progress] | None = None,
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run every stage of ``config`` in order into ``run_dir`` (resuming what is there)."""
    from fingen.prompts import set_prompt_dir, templates_digest
    from fingen.store import RunStore

    params = validate_pipeline(config)
    specs = [spec_of(resolve_stage(sc.stage)) for sc in config.stages]
    store = RunStore(run_dir or default_run_dir(config))
    prompts_dir = config.resolve_path(config.prompts_dir) if config.prompts_dir else None
    if prompts_dir is not None and not prompts_dir.is_dir():
        raise ConfigError("folder not found", where=f"prompts_dir: {config.prompts_dir}")
    set_prompt_dir(prompts_dir)
    prompts_digest = templates_digest()
    store.lock()  # before reading: another run may finish between a read and the lock
    try:
        previous_manifest = store.load_manifest()
    except BaseException:
        store.unlock()
        raise
    previous = previous_manifest.get("stages", {})
    manifest: dict[str, Any] = {
        "pipeline": config.name,
        "run_dir": str(store.root),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
        "config": redacted_config(config),
        "versions": versions(),
        "llm": {"backend": config.llm.backend, "model": config.llm.model or config.llm.local.model},
        "models": {name: model_entry(config, name) for name in config.model_names()},
        "embedder": config.embedder.model,
        # stages of an earlier pipeline on this run directory stay recorded (their files are
        # still the run's data), before this pipeline's own
        "stages": {k: {**e, "earlier": True} for k, e in previous.items()
                   if k not in {sc.key for sc in config.stages}},
    }  # fmt: skip
    resources = Resources(config, store, carried_budget(config, previous_manifest))
    executor = make_executor(config)  # where stages run (fingen.executors)
    fingerprints: list[str] = []
    status, dirty = "complete", False
    t_run = time.perf_counter()
    try:
        for i, sc in enumerate(config.stages):
            fp = stage_fingerprint(config, i, fingerprints, prompts_digest)
            fingerprints.append(fp)
            prev = previous.get(sc.key, {})
            if not dirty and _finished(store, sc.key, prev, fp):
                manifest["stages"][sc.key] = {**prev, "resumed": True}
                if on_stage:
                    on_stage(sc.key, manifest["stages"][sc.key])
                continue
            dirty = True  # every later stage runs again: its inputs may change
            entry = _run_stage(config, i, params[i], fp, store, resources, specs, manifest,
                               progress_factory, executor)  # fmt: skip
            if on_stage:
                on_stage(sc.key, entry)
            if entry["status"] != "done":
                status = "stopped_budget" if entry["status"] == "stopped" else entry["status"]
                break
    except (Interrupted, KeyboardInterrupt):
        status = "interrupted"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        executor.close()
        resources.close()
        if status == "complete" and any(
            e.get("transient_failures") for e in manifest["stages"].values()
        ):
            status = "complete_with_failures"
        manifest["status"] = status
        manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        manifest["wall_s"] = round(time.perf_counter() - t_run, 3)
        manifest["prompts"] = _prompts(manifest["stages"])
        manifest["totals"] = totals(manifest["stages"])
        manifest["budget"] = budget_entry(resources.budget)
        store.save_manifest(manifest)
        if status in ("interrupted", "failed"):
            store.unlock()
    try:
        _finalize(config, params, store, resources, specs, manifest)
    finally:
        store.unlock()
    return RunResult(store.root, manifest, status, manifest["stages"])


def _finished(store: Any, key: str, prev: dict[str, Any], fingerprint: str) -> bool:
    """A stage that needs no re-run: done with the same fingerprint, its files there, and no
    rows that failed for a transient reason (those are re-attempted by running it again)."""
    return (
        prev.get("status") == "done"
        and prev.get("fingerprint") == fingerprint
        and not prev.get("transient_failures")
        and _outputs_exist(store, key, prev)
    )


def _run_stage(
    config: PipelineConfig,
    i: int,
    params: Any,
    fingerprint: str,
    store: Any,
    resources: Resources,
    specs: list[StageSpec],
    manifest: dict[str, Any],
    progress_factory: Callable[[str, int | None], Progress] | None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run one stage and record it in the manifest (also when it fails or is interrupted)."""
    sc = config.stages[i]
    store.clear_stage(sc.key)
    ctx = _context(config, i, store, resources, specs, progress_factory)
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"stage": sc.stage, "fingerprint": fingerprint}
    ctx.fingerprint = fingerprint
    try:
        (executor or make_executor(config)).run_stage(
            resolve_stage(sc.stage), ctx, params, resources
        )
        ctx.commit()
        entry["status"] = "done"
    except BudgetExceeded as exc:
        ctx.commit()  # keep everything finished before the budget ran out
        entry.update(status="stopped", reason=str(exc))
    except (Interrupted, KeyboardInterrupt):
        ctx.abort()
        entry.update(status="interrupted", reason="interrupted; run the same command to resume")
        raise
    except BaseException as exc:
        ctx.abort()
        entry.update(status="failed", reason=redact(f"{type(exc).__name__}: {exc}")[:500])
        raise
    finally:
        entry.update(ctx.stats.as_dict(), wall_s=round(time.perf_counter() - t0, 3))
        kinds, replaces = ctx.kinds()
        entry["kinds"] = kinds
        if replaces:
            entry["replaces"] = replaces
        usage, by_model = ctx.with_remote_usage(*resources.stage_usage(sc.key))
        if usage is not None:
            entry["usage"], entry["usage_by_model"] = usage, by_model
            entry["models"] = {r: n for r, n in ctx.used_models.items() if n in by_model}
            if judge := self_judged(config, specs[i], manifest["stages"], entry):
                entry["self_judged"] = judge
        if prompts := {**resources.stage_prompts(sc.key), **ctx.remote_prompts}:
            entry["prompts"] = prompts
        manifest["stages"][sc.key] = entry
        manifest["prompts"] = _prompts(manifest["stages"])
        store.save_manifest(manifest)
    return entry


def _prompts(stages: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every template the run's tasks rendered (name -> sha256), from the stage entries."""
    out: dict[str, str] = {}
    for entry in stages.values():
        out.update(entry.get("prompts", {}))
    return dict(sorted(out.items()))


def _finalize(
    config: PipelineConfig,
    params: list[Any],
    store: Any,
    resources: Resources,
    specs: list[StageSpec],
    manifest: dict[str, Any],
) -> None:
    """Re-run the FINALIZERS stages (the report) now that the manifest is final."""
    for i, sc in enumerate(config.stages):
        if sc.stage in FINALIZERS and manifest["stages"].get(sc.key, {}).get("status") == "done":
            ctx = _context(config, i, store, resources, specs)
            resolve_stage(sc.stage)(ctx, params[i])
            ctx.abort()  # the stage's own bookkeeping file from the run stays as it was


def _outputs_exist(store: Any, key: str, entry: dict[str, Any]) -> bool:
    return all(
        store.stage_path(key, "" if name == "main" else name).is_file()
        for name in entry.get("outputs", {})
    )
