"""The run's resources: its named models (one engine each, sharing one budget and one
request cache), the embedder (loaded on first use), and which model each stage uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fingen.config import PipelineConfig
from fingen.redact import redact
from fingen.stages.base import StageSpec

__all__ = [
    "Resources",
    "budget_entry",
    "carried_budget",
    "model_entry",
    "model_identity",
    "self_judged",
    "stage_models",
]


class _LazyEmbedder:
    """Loads the run's embedder on first use, so stages that never encode never load it."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load, self._model = load, None

    def __getattr__(self, name: str) -> Any:
        if self._model is None:
            self._model = self._load()
        return getattr(self._model, name)


class Resources:
    """The run's models (one engine per name, created on first use, sharing one budget and
    one request cache) and the embedder; closed at the end."""

    def __init__(self, config: PipelineConfig, store: Any, budget: Any = None) -> None:
        from fingen.llm.budget import Budget

        self.config, self.store = config, store
        limits = config.llm.budget
        self.budget = budget or Budget(
            limits.max_tokens if limits else None, limits.max_cost if limits else None
        )
        self.engines: dict[str, Any] = {}
        self.extra_models: dict[str, Any] = {}  # registered by a stage (annotate rounds)
        self.embedder = _LazyEmbedder(self._load_embedder)

    def llm(self, stage_key: str, name: str = "default", config: Any = None) -> Any:
        """Model ``name``'s engine metered under ``stage_key``; ``config`` registers a model
        that is not in the pipeline's ``models`` (e.g. an annotation round's endpoint)."""
        if config is not None:
            self.extra_models.setdefault(name, config)
        if name not in self.engines:
            from fingen.llm.engine import build_engine

            config = self.extra_models.get(name) or self.config.model_config_for(name)
            same = next((e for e in self.engines.values() if _same_backend(e.config, config)), None)
            self.engines[name] = (
                same.sibling(config)
                if same is not None
                else build_engine(config, cache_path=self.store.llm_cache_path, budget=self.budget)
            )
        return self.engines[name].for_stage(stage_key)

    def _load_embedder(self) -> Any:
        from fingen.embed.models import load_embedder

        ec = self.config.embedder
        return load_embedder(
            ec.model or "minilm",
            batch_size=ec.batch_size,
            device=ec.device,
            cache_path=self.store.embed_cache_path if ec.cache else None,
        )

    def get_embedder(self) -> Any:
        return self.embedder

    def stage_usage(self, key: str) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """The stage's usage over all models, and per model (models that did something)."""
        by_model = {}
        for name, engine in self.engines.items():
            usage = engine.stage_usage().get(key)
            if usage and (usage["requests"] or usage["cached"]):
                by_model[name] = usage
        if not by_model:
            return None, {}
        total = {k: sum(u[k] for u in by_model.values()) for k in next(iter(by_model.values()))}
        total["cost"] = round(total["cost"], 6)
        return total, by_model

    def stage_prompts(self, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for engine in self.engines.values():
            out.update(engine.stage_prompts().get(key, {}))
        return out

    def close(self) -> None:
        # siblings first: the engine that owns a backend closes it
        for engine in sorted(
            self.engines.values(), key=lambda e: getattr(e, "_owner", None) is None
        ):
            engine.close()


_BACKEND_FIELDS = {
    "backend", "model", "base_url", "api_key_env", "concurrency", "rpm", "tpm", "max_retries",
    "backoff_s", "timeout_s", "schema_style", "extra_body", "local", "vllm_engine", "fake",
}  # fmt: skip


def _same_backend(a: Any, b: Any) -> bool:
    """Two model configs that reach the same server or weights the same way."""
    return bool(a.model_dump(include=_BACKEND_FIELDS) == b.model_dump(include=_BACKEND_FIELDS))


def stage_models(config: PipelineConfig, index: int, spec: StageSpec) -> dict[str, str]:
    """Which named model a stage uses for its main work ("llm") and its judging ("judge"):
    the stage's ``model:`` / ``judge_model:``, else by role (``judge`` for judging stages and
    steps, ``teacher`` for distillation, when defined), else the default ``llm``."""
    sc, names = config.stages[index], set(config.models)
    by_role = {"judge": "judge", "teach": "teacher"}.get(spec.role)
    main = sc.model or (by_role if by_role in names else "default")
    judge = sc.judge_model or ("judge" if "judge" in names else main)
    return {"llm": main, "judge": judge}


def model_identity(config: PipelineConfig, name: str) -> str:
    """What a named model is (backend, endpoint, weights): equal identities = the same model."""
    c = config.model_config_for(name)
    where = c.local.model if c.backend == "local" else c.base_url or ""
    return f"{c.backend}|{where}|{c.model}"


def model_entry(config: PipelineConfig, name: str) -> dict[str, Any]:
    c = config.model_config_for(name)
    entry: dict[str, Any] = {"backend": c.backend, "model": c.model or None}
    if c.backend == "local":
        entry["local_model"] = c.local.model
    if c.base_url:
        entry["base_url"] = redact(c.base_url)
    return entry


def carried_budget(config: PipelineConfig, previous: dict[str, Any]) -> Any:
    """The run's budget, counting what earlier invocations on this run directory spent."""
    from fingen.llm.budget import Budget

    limits, spent = config.llm.budget, previous.get("budget", {})
    return Budget(
        limits.max_tokens if limits else None,
        limits.max_cost if limits else None,
        spent_tokens=int(spent.get("spent_tokens", 0)),
        spent_cost=float(spent.get("spent_cost", 0.0)),
    )


def budget_entry(budget: Any) -> dict[str, Any]:
    return {
        "spent_tokens": budget.spent_tokens,
        "spent_cost": round(budget.spent_cost, 6),
        "max_tokens": budget.max_tokens,
        "max_cost": budget.max_cost,
    }


def self_judged(
    config: PipelineConfig, spec: StageSpec, stages: dict[str, dict[str, Any]], entry: dict
) -> str | None:
    """The judge's name when a stage's judge is the model that generated what it judges."""
    if spec.judges is None:
        return None
    models = entry.get("models", {})
    judge = models.get("judge" if spec.role == "generate" else "llm")
    if judge is None:
        return None
    if spec.role == "generate":  # a judging step over the stage's own output
        generators = [models.get("llm")]
    else:
        generators = [
            e.get("models", {}).get("llm")
            for e in stages.values()
            if spec.judges in e.get("kinds", {}).values()
        ]
    same = model_identity(config, judge)
    return judge if any(g and model_identity(config, g) == same for g in generators) else None
