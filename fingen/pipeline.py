"""The runner: wires the stages named in a pipeline YAML and records everything in the manifest.

Stages are looked up in ``STAGES`` (name -> "module:function", imported only when used).
A stage that finished with the same fingerprint (its params, the model, the embedder and
its upstream outputs) is skipped on a re-run; everything else re-runs, and the request cache
makes already-answered LLM requests free.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from fingen.config import PipelineConfig, parse_params
from fingen.errors import BudgetExceeded, ConfigError
from fingen.stages.base import Progress, StageContext, StageStats

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
VERSIONED = [
    "fingen",
    "pydantic",
    "jinja2",
    "aiohttp",
    "tenacity",
    "datasets",
    "sentence-transformers",
    "torch",
    "llama_cpp_python",
    "bertopic",
    "vllm",
]
_SECRET_KEYS = {"api_key", "apikey", "token", "hf_token", "password", "secret", "authorization"}
_SECRET_SUFFIXES = ("_api_key", "_secret", "_password", "_token")
# Settings that change how fast or how much is sent, never what a stage produces.
_OPERATIONAL_LLM_FIELDS = {
    "concurrency",
    "rpm",
    "tpm",
    "timeout_s",
    "backoff_s",
    "max_retries",
    "prices",
    "budget",
    "cache",
}


def resolve_stage(name: str) -> Callable[..., None]:
    """Import the stage function registered as ``name``."""
    try:
        target = STAGES[name]
    except KeyError:
        raise ConfigError(
            f"unknown stage '{name}'; known stages: {', '.join(sorted(STAGES))}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def validate_pipeline(config: PipelineConfig) -> list[Any]:
    """Check every stage name and its params; returns the parsed params per stage."""
    parsed = []
    for i, sc in enumerate(config.stages):
        fn = resolve_stage(sc.stage)
        parsed.append(parse_params(fn.params_model, sc.params, f"stages[{i}] ({sc.key}).params"))
    return parsed


def _is_secret(key: str) -> bool:
    k = key.lower()
    if k.endswith("_env") or k.startswith("max_"):  # names of env vars; token *limits*
        return False
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def _strip_userinfo(value: Any) -> Any:
    if (
        isinstance(value, str)
        and "://" in value
        and "@" in value.split("://", 1)[1].split("/", 1)[0]
    ):
        scheme, rest = value.split("://", 1)
        return f"{scheme}://<redacted>@{rest.split('@', 1)[1]}"
    return value


def redacted_config(config: PipelineConfig) -> dict[str, Any]:
    """The config as a dict with secret values removed (key *names* and env var names kept)."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {
                k: ("<redacted>" if _is_secret(str(k)) and v else clean(v)) for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return _strip_userinfo(obj)

    return clean(config.model_dump(mode="json"))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def default_run_dir(config: PipelineConfig, base: str | Path = "outputs") -> Path:
    return Path(base) / config.name / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _stamp(path: Path) -> list[Any]:
    st = path.stat()
    if not path.is_dir():
        return [str(path), st.st_size, st.st_mtime_ns]
    h = hashlib.sha256()
    for i, f in enumerate(sorted(path.rglob("*"))):
        if i >= 100_000:
            break
        if f.is_file():
            fs = f.stat()
            h.update(f"{f.relative_to(path)}|{fs.st_size}|{fs.st_mtime_ns}\n".encode())
    return [str(path), h.hexdigest()]


def _input_stamps(config: PipelineConfig, params: Any) -> list[Any]:
    """Size and mtime of every file (or folder's files) a stage's params name, so edited
    inputs re-run the stage."""
    stamps: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and 0 < len(value) < 4096:
            path = config.resolve_path(value)
            try:
                if path.exists():
                    stamps.append(_stamp(path))
            except (OSError, ValueError):
                return

    walk(params)
    return stamps


def _fingerprint(config: PipelineConfig, index: int, upstream: list[str], prompts: str) -> str:
    """What decides a stage's output: its params and inputs, the model settings, the prompt
    templates and everything upstream. A finished stage with the same fingerprint is skipped."""
    sc = config.stages[index]
    llm = config.llm.model_dump(mode="json", exclude=_OPERATIONAL_LLM_FIELDS)
    blob = json.dumps(
        [
            sc.model_dump(mode="json"),
            _input_stamps(config, sc.params),
            config.lang,
            llm,
            config.embedder.model,
            prompts,
            upstream,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class RunResult:
    run_dir: Path
    manifest: dict[str, Any]
    status: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Resources:
    """The LLM engine and the embedder, created on first use and closed at the end."""

    def __init__(self, config: PipelineConfig, store: Any) -> None:
        self.config, self.store = config, store
        self.engine: Any = None
        self.embedder: Any = None

    def llm(self, stage_key: str) -> Any:
        if self.engine is None:
            from fingen.llm.engine import build_engine

            self.engine = build_engine(self.config.llm, cache_path=self.store.llm_cache_path)
        return self.engine.for_stage(stage_key)

    def get_embedder(self) -> Any:
        if self.embedder is None:
            from fingen.embed.models import load_embedder

            ec = self.config.embedder
            self.embedder = load_embedder(
                ec.model,
                batch_size=ec.batch_size,
                device=ec.device,
                cache_path=self.store.embed_cache_path if ec.cache else None,
            )
        return self.embedder

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def run_pipeline(
    config: PipelineConfig,
    run_dir: str | Path | None = None,
    *,
    progress_factory: Callable[[str, int | None], Progress] | None = None,
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run every stage of ``config`` in order into ``run_dir`` (resuming what is there)."""
    from fingen.prompts import prompt_hashes, reset_usage, set_prompt_dir, templates_digest
    from fingen.store import RunStore

    params = validate_pipeline(config)
    store = RunStore(run_dir or default_run_dir(config))
    prompts_dir = config.resolve_path(config.prompts_dir) if config.prompts_dir else None
    if prompts_dir is not None and not prompts_dir.is_dir():
        raise ConfigError("folder not found", where=f"prompts_dir: {config.prompts_dir}")
    set_prompt_dir(prompts_dir)
    reset_usage()
    prompts_digest = templates_digest()
    previous_manifest = store.load_manifest()
    previous = previous_manifest.get("stages", {})
    manifest: dict[str, Any] = {
        "pipeline": config.name,
        "run_dir": str(store.root),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
        "config": redacted_config(config),
        "versions": _versions(),
        "llm": {"backend": config.llm.backend, "model": config.llm.model or config.llm.local.model},
        "embedder": config.embedder.model,
        "stages": {},
    }
    resources = _Resources(config, store)
    fingerprints: list[str] = []
    status = "complete"
    t_run = time.perf_counter()
    try:
        for i, sc in enumerate(config.stages):
            fp = _fingerprint(config, i, fingerprints, prompts_digest)
            fingerprints.append(fp)
            prev = previous.get(sc.key, {})
            if (
                prev.get("status") == "done"
                and prev.get("fingerprint") == fp
                and _outputs_exist(store, sc.key, prev)
            ):
                manifest["stages"][sc.key] = {**prev, "resumed": True}
                if on_stage:
                    on_stage(sc.key, manifest["stages"][sc.key])
                continue
            store.clear_stage(sc.key)
            stats = StageStats()
            ctx = StageContext(
                key=sc.key,
                store=store,
                config=config,
                stats=stats,
                get_llm=resources.llm,
                get_embedder=resources.get_embedder,
                make_progress=progress_factory or (lambda d, t: Progress()),
            )
            t0 = time.perf_counter()
            entry: dict[str, Any] = {"stage": sc.stage, "fingerprint": fp}
            try:
                resolve_stage(sc.stage)(ctx, params[i])
                ctx.commit()
                entry["status"] = "done"
            except BudgetExceeded as exc:
                ctx.commit()  # keep everything finished before the budget ran out
                entry.update(status="stopped", reason=str(exc))
                status = "stopped_budget"
            except BaseException as exc:
                ctx.abort()
                entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:500])
                status = "failed"
                raise
            finally:
                entry.update(stats.as_dict(), wall_s=round(time.perf_counter() - t0, 3))
                if resources.engine is not None and sc.key in resources.engine.stage_usage():
                    entry["usage"] = resources.engine.stage_usage()[sc.key]
                manifest["stages"][sc.key] = entry
                manifest["prompts"] = {**previous_manifest.get("prompts", {}), **prompt_hashes()}
                store.save_manifest(manifest)
                if on_stage:
                    on_stage(sc.key, entry)
            if status != "complete":
                break
    finally:
        resources.close()
        manifest["status"] = status
        manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        manifest["wall_s"] = round(time.perf_counter() - t_run, 3)
        manifest["prompts"] = {**previous_manifest.get("prompts", {}), **prompt_hashes()}
        manifest["totals"] = _totals(manifest["stages"])
        store.save_manifest(manifest)
    _finalize(config, params, store, resources, manifest)
    return RunResult(store.root, manifest, status, manifest["stages"])


def _finalize(
    config: PipelineConfig, params: list[Any], store: Any, resources: Any, manifest: dict[str, Any]
) -> None:
    """Re-run the FINALIZERS stages (the report) now that the manifest is final."""
    for i, sc in enumerate(config.stages):
        if sc.stage in FINALIZERS and manifest["stages"].get(sc.key, {}).get("status") == "done":
            ctx = StageContext(
                key=sc.key,
                store=store,
                config=config,
                stats=StageStats(),
                get_llm=resources.llm,
                get_embedder=resources.get_embedder,
            )
            resolve_stage(sc.stage)(ctx, params[i])
            ctx.abort()  # the stage's own bookkeeping file from the run stays as it was


def _outputs_exist(store: Any, key: str, entry: dict[str, Any]) -> bool:
    return all(
        store.stage_path(key, "" if name == "main" else name).is_file()
        for name in entry.get("outputs", {})
    )


def _totals(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Usage and failures of all stages (what the outputs cost); ``this_run`` leaves out
    stages resumed from an earlier run (what this invocation spent)."""

    def add(entries: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(
            ("requests", "cached", "prompt_tokens", "completion_tokens"), 0
        )
        out.update(cost=0.0, failed=0, rejected_rows=0)
        for entry in entries:
            usage = entry.get("usage", {})
            for k in ("requests", "cached", "prompt_tokens", "completion_tokens", "cost"):
                out[k] += usage.get(k, 0)
            out["failed"] += entry.get("failed", 0)
            out["rejected_rows"] += entry.get("rejected_rows", 0)
        out["cost"] = round(out["cost"], 6)
        return out

    totals = add(list(stages.values()))
    totals["this_run"] = add([e for e in stages.values() if not e.get("resumed")])
    return totals


def summary_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """End-of-run table rows: stage, in, ok, failed, rejected, outputs, cached, requests, tokens, time."""
    rows = []
    for key, e in manifest.get("stages", {}).items():
        u = e.get("usage", {})
        outs = "\n".join(f"{k}={v}" for k, v in e.get("outputs", {}).items() if k != "failures")
        rows.append(
            [
                key + (" (resumed)" if e.get("resumed") else ""),
                str(e.get("inputs", 0)),
                str(e.get("succeeded", 0)),
                str(e.get("failed", 0)),
                str(e.get("rejected_rows", 0)),
                outs,
                str(u.get("cached", 0)),
                str(u.get("requests", 0)),
                str(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)),
                f"{e.get('wall_s', 0):.1f}s",
            ]
        )
    return rows
