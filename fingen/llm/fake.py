"""A scripted in-process backend for dry runs and tests (``backend: fake``).

It cycles through the configured responses; with none, it answers every structured request
with a minimal instance of the requested JSON schema and free-text requests with a boxed 0.
"""

from __future__ import annotations

import json
from typing import Any

from fingen.llm.base import ChatRequest, Completion, SchemaStyle, Usage

__all__ = ["FakeBackend", "schema_instance"]


def schema_instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A small value that validates against ``schema`` (pydantic-style $defs/$ref supported)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return schema_instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return schema_instance(schema[key][0], defs)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {name: schema_instance(sub, defs) for name, sub in props.items()}
    if kind == "array":
        n = max(1, schema.get("minItems", 1))
        return [schema_instance(schema.get("items", {}), defs) for _ in range(n)]
    if kind == "integer":
        return max(0, schema.get("minimum", 0))
    if kind == "number":
        return float(max(0, schema.get("minimum", 0)))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x" * max(1, schema.get("minLength", 1))


class FakeBackend:
    """Deterministic responses without a model; counts requests in ``self.requests``."""

    schema_style: SchemaStyle = "none"

    def __init__(self, responses: list[str] | None = None, model: str = "fake") -> None:
        self.model = model
        self.responses = list(responses or [])
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        if self.responses:
            text = self.responses[(len(self.requests) - 1) % len(self.responses)]
        elif request.json_schema is not None:
            text = json.dumps(schema_instance(request.json_schema))
        else:
            text = "Reasoning step.\n\\boxed{0}"
        prompt_chars = sum(len(m.get("content", "")) for m in request.messages)
        return Completion(
            text=text,
            model=self.model,
            usage=Usage(prompt_tokens=prompt_chars // 4, completion_tokens=len(text) // 4),
        )

    async def aclose(self) -> None:
        return None
