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

__all__ = [
    "BudgetConfig",
    "EmbedderConfig",
    "FakeConfig",
    "LLMConfig",
    "LocalModelConfig",
    "PipelineConfig",
    "PricesConfig",
    "StageConfig",
    "apply_overrides",
    "format_validation_error",
    "load_pipeline",
    "parse_params",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbedderConfig(_Strict):
    model: str = Field("minilm", description="'minilm', 'e5' or a sentence-transformers path")
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    cache: bool = True


class StageConfig(_Strict):
    stage: str = Field(description="stage type, e.g. ingest, chunk, bottom_up")
    id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="unique name of this step (default: the stage type)",
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.id or self.stage


class PipelineConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="run dirs go to outputs/<name>/")
    description: str = ""
    lang: Literal["en", "zh"] = "en"
    prompts_dir: str | None = None
    llm: LLMConfig = Field(default_factory=LLMConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
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

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineConfig:
        seen: set[str] = set()
        for s in self.stages:
            if s.key in seen:
                raise ValueError(f"two stages named '{s.key}': give one an 'id'")
            seen.add(s.key)
        return self


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One readable line per problem: the dotted location, then the message."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = err["msg"]
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
