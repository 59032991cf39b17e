"""Configuration of the LLM layer (the ``llm:`` block of a pipeline); pydantic, extra="forbid".

Lives beside the backends so the LLM layer never imports the pipeline configuration.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["BudgetConfig", "FakeConfig", "LLMConfig", "LocalModelConfig", "PricesConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PricesConfig(_Strict):
    """USD per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


class BudgetConfig(_Strict):
    """Stop cleanly (keeping all finished work) once a limit is reached."""

    max_tokens: int | None = Field(None, gt=0)
    max_cost: float | None = Field(None, gt=0)


class LocalModelConfig(_Strict):
    """The embedded llama.cpp server (``backend: local``)."""

    model: str = Field(
        "qwen2.5-coder-1.5b", description="'qwen2.5-coder-1.5b', 'smollm2' or a .gguf path"
    )
    n_ctx: int = Field(8192, ge=512)
    n_threads: int | None = Field(None, ge=1)
    startup_timeout_s: float = Field(300.0, gt=0)


class FakeConfig(_Strict):
    """Dry runs: a handler (import path of ``request -> reply``), else scripted responses
    cycled in order, else a minimal schema-valid answer."""

    responses: list[str] = Field(default_factory=list)
    handler: str | None = Field(None, description="'package.module:function' answering requests")


class LLMConfig(_Strict):
    backend: Literal["openai", "local", "vllm", "ray_llm", "fake"] = "local"
    model: str = ""
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint; a list (or comma-separated URLs) is a fleet "
        "serving one model, balanced by requests in flight",
    )
    api_key_env: str | None = Field(None, description="NAME of the env var holding the key")
    concurrency: int = Field(8, ge=1, le=4096)
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    max_retries: int = Field(5, ge=0, le=50)
    backoff_s: float = Field(1.0, ge=0, description="first backoff delay; doubles per retry")
    timeout_s: float = Field(120.0, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(1024, ge=1)
    max_reasks: int = Field(2, ge=0, le=10)
    schema_style: Literal["json_schema", "json_object_schema", "json_object", "none"] | None = None
    schema_in_prompt: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    prices: PricesConfig | None = None
    budget: BudgetConfig | None = None
    cache: bool = True
    local: LocalModelConfig = Field(default_factory=LocalModelConfig)
    fake: FakeConfig = Field(default_factory=FakeConfig)
    vllm_engine: dict[str, Any] = Field(default_factory=dict, description="in-process vLLM args")
    ray_llm: dict[str, Any] = Field(
        default_factory=dict,
        description="backend ray_llm: vLLMEngineProcessorConfig fields (concurrency, "
        "batch_size, accelerator_type, ...); engine args come from vllm_engine",
    )

    @field_validator("base_url", mode="before")
    @classmethod
    def _fleet(cls, value: Any) -> Any:
        """A list of URLs is kept as one comma-separated string (see ``base_urls``)."""
        if isinstance(value, (list, tuple)):
            urls = [str(u).strip() for u in value if str(u).strip()]
            return ",".join(urls) or None
        return value

    @property
    def base_urls(self) -> list[str]:
        """The endpoints of ``base_url``: one, or the fleet's (in the order given)."""
        if not self.base_url:
            return []
        return [u.strip() for u in self.base_url.split(",") if u.strip()]

    @model_validator(mode="after")
    def _check_backend(self) -> LLMConfig:
        if self.backend == "openai" and not self.base_urls:
            raise ValueError("backend 'openai' needs base_url (e.g. https://api.openai.com/v1)")
        if len(set(self.base_urls)) != len(self.base_urls):
            raise ValueError("base_url: the fleet names an endpoint twice")
        return self
