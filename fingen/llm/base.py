"""The narrow seam every LLM backend implements, and the request/response records."""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Backend",
    "ChatRequest",
    "Completion",
    "Message",
    "SchemaStyle",
    "Usage",
]

Message = dict[str, str]
SchemaStyle = Literal["json_schema", "json_object_schema", "json_object", "none"]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatRequest(BaseModel):
    """One chat completion request. Every field is part of the cache key."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    temperature: float = 0.0
    max_tokens: int = 1024
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    json_schema: dict[str, Any] | None = None  # the response model's JSON schema
    schema_name: str = "response"
    sample_idx: int = 0  # distinguishes repeated samples of the same prompt
    extra: dict[str, Any] = Field(default_factory=dict)  # backend-specific body fields


class Completion(BaseModel):
    text: str
    reasoning: str | None = None  # a reasoning model's separate reasoning field
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    cached: bool = False


@runtime_checkable
class Backend(Protocol):
    """Transport to one model. Retries for 429/5xx live inside; caching does not."""

    model: str
    schema_style: SchemaStyle

    async def complete(self, request: ChatRequest) -> Completion:
        """Send one request; raise TransportError when retries are exhausted."""
        ...

    async def aclose(self) -> None:
        """Release connections, child processes, engines."""
        ...
