"""Pipeline configuration: pydantic models with ``extra="forbid"``; YAML is only a way to write it.

A typo in any key is an error that names the key and where it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from fingen.errors import ConfigError
from fingen.llm.config import BudgetConfig, FakeConfig, LLMConfig, LocalModelConfig, PricesConfig
from fingen.splits import SplitConfig

__all__ = [
    "BudgetConfig",
    "EmbedderConfig",
    "ExecutorConfig",
    "FakeConfig",
    "LLMConfig",
    "LocalModelConfig",
    "PipelineConfig",
    "PricesConfig",
    "RelevanceConfig",
    "SplitConfig",
    "StageConfig",
    "apply_overrides",
    "format_validation_error",
    "load_pipeline",
    "parse_params",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


#: Embedders that only know English (choosing one for ``lang: zh`` is an error).
ENGLISH_ONLY_EMBEDDERS = frozenset({"minilm", "all-minilm-l6-v2"})


class EmbedderConfig(_Strict):
    model: str | None = Field(
        None,
        description="'minilm', 'e5' or a sentence-transformers path "
        "(default: minilm for en, e5 (multilingual) for zh)",
    )
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    cache: bool = True


class RelevanceConfig(_Strict):
    """What a grade means in binary exports (see ``fingen.labels``)."""

    min_positive: Literal[1, 2] = Field(
        2, description="lowest grade that is a positive (2: answers the query)"
    )


class ExecutorConfig(_Strict):
    """Where a stage's work runs (``fingen.executors``): in this process (``local``, the
    default) or on a Ray cluster (``ray``: pure-map stages run per shard in actors)."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = Field(
        None,
        description="Ray cluster: None starts one here, 'auto' joins the running one, "
        "'ray://host:10001' a remote one",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a Ray cluster started here")
    actors: int | None = Field(
        None, ge=1, description="actors per mapped stage (default: the cluster's CPUs, max 8)"
    )
    actor_cpus: float = Field(0.5, gt=0, description="CPUs each actor reserves")
    actor_gpus: float = Field(0.0, ge=0, description="GPUs each actor reserves (backend vllm)")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="records per shard of a mapped stage (ray default 64; local: unset runs "
        "the stage over its whole input at once, a number streams it in batches)",
    )
    shards: Literal["jsonl", "parquet"] = Field("jsonl", description="format of shard files")
    shard_dir: str | None = Field(
        None, description="where shards go: a path or fsspec URL (default <run>/shards)"
    )
    shard_rows: int | None = Field(
        None,
        ge=1,
        description="bounded memory: embeddings kept as .npy shards of this many rows, "
        "searched shard by shard (unset: in memory)",
    )
    ray_llm_rounds: int = Field(
        6, ge=1, le=20, description="backend ray_llm: most request rounds per stage"
    )


class StageConfig(_Strict):
    stage: str = Field(description="stage type, e.g. ingest, chunk, bottom_up")
    id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="unique name of this step (default: the stage type)",
    )
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = Field(
        None, description="the model this stage uses: 'default' (llm) or a name from models"
    )
    judge_model: str | None = Field(
        None, description="the model of the stage's judging step (default: models.judge)"
    )

    @property
    def key(self) -> str:
        return self.id or self.stage


class PipelineConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="run dirs go to outputs/<name>/")
    description: str = ""
    lang: Literal["en", "zh"] = "en"
    prompts_dir: str | None = None
    llm: LLMConfig = Field(default_factory=LLMConfig)
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named models (judge, teacher, ...): each inherits every key of llm",
    )
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    relevance: RelevanceConfig = Field(default_factory=RelevanceConfig)
    split: SplitConfig = Field(default_factory=SplitConfig, description="held-out documents")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    stages: list[StageConfig] = Field(min_length=1)
    _source_dir: Path | None = PrivateAttr(None)  # folder of the YAML file, for relative paths

    def resolve_path(self, path: str) -> Path:
        """``$VARS`` and ``~`` expanded; a relative path is taken relative to the pipeline
        file's folder when it exists there, else relative to the working directory."""
        p = Path(os.path.expandvars(os.path.expanduser(path)))
        if p.is_absolute() or self._source_dir is None:
            return p
        beside = self._source_dir / p
        return beside if beside.exists() else p

    def model_names(self) -> list[str]:
        """``default`` (the ``llm`` block) and every name in ``models``."""
        return ["default", *self.models]

    def model_config_for(self, name: str) -> LLMConfig:
        """The LLM config of model ``name``: ``llm`` deep-merged with ``models[name]``.

        Raises:
            ConfigError: an unknown name, or an invalid merged config (naming the key).
        """
        if name == "default":
            return self.llm
        if name not in self.models:
            known = ", ".join(self.model_names())
            raise ConfigError(f"unknown model '{name}'; known models: {known}", where="models")
        merged = _deep_merge(self.llm.model_dump(exclude_unset=False), self.models[name])
        try:
            return LLMConfig.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"models.{name}")) from None

    @model_validator(mode="after")
    def _resolve(self) -> PipelineConfig:
        if self.embedder.model is None:
            self.embedder.model = "e5" if self.lang == "zh" else "minilm"
        elif self.lang == "zh" and self.embedder.model.lower() in ENGLISH_ONLY_EMBEDDERS:
            raise ValueError(
                f"embedder.model '{self.embedder.model}' is English-only but lang is 'zh': "
                "use embedder.model: e5 (multilingual) or another multilingual model"
            )
        for name, override in self.models.items():
            if name == "default":
                raise ValueError("models: 'default' is the llm block itself; pick another name")
            if "budget" in override:
                raise ValueError(
                    f"models.{name}.budget: budgets span all models of a run; set llm.budget"
                )
            self.model_config_for(name)
        for s in self.stages:
            for field in ("model", "judge_model"):
                value = getattr(s, field)
                if value is not None and value not in self.model_names():
                    known = ", ".join(self.model_names())
                    raise ValueError(
                        f"stage '{s.key}': {field} '{value}' is not a model; known: {known}"
                    )
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineConfig:
        seen: set[str] = set()
        for s in self.stages:
            if s.key in seen:
                raise ValueError(f"two stages named '{s.key}': give one an 'id'")
            seen.add(s.key)
        return self


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One readable line per problem: the dotted location, then the message."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key '{err['loc'][-1]}'"
            loc = ".".join([prefix] + [str(p) for p in err["loc"][:-1]]).strip(".") or "top level"
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)


def parse_params(model: type[BaseModel], params: dict[str, Any], where: str) -> Any:
    """Validate a stage's params against its model; errors name the key."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            idx = _stage_index(cur, part)
            if last:
                cur[idx] = value
            else:
                cur = cur[idx]
            continue
        if not isinstance(cur, dict):
            raise ConfigError(f"cannot set '{dotted}': '{'.'.join(parts[:i])}' is not a mapping")
        if last:
            cur[part] = value
        else:
            cur = cur.setdefault(part, {})


def _stage_index(stages: list[Any], part: str) -> int:
    if part.isdigit() and int(part) < len(stages):
        return int(part)
    for i, s in enumerate(stages):
        if isinstance(s, dict) and (s.get("id") or s.get("stage")) == part:
            return i
    raise ConfigError(f"no stage named '{part}' (use a stage id or index)", where="--set")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (value parsed as YAML). Stages are addressed by id."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"expected KEY=VALUE, got '{item}'", where="--set")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
    return data


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline YAML, apply overrides and validate it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("pipeline file not found", where=str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid YAML: {str(exc).splitlines()[0]}", where=str(p)) from None
    if not isinstance(data, dict):
        raise ConfigError("a pipeline must be a YAML mapping", where=str(p))
    data = apply_overrides(data, overrides or [])
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), where=p.name) from None
    config._source_dir = p.resolve().parent
    return config
