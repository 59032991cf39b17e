"""An in-process backend for dry runs and tests (``backend: fake``), like httpx's MockTransport.

``FakeBackend(handler)`` answers every request from a callable ``request -> reply``; a reply
is a string (the message content), any JSON value (serialised), or a full ``Completion``.
Without a handler it cycles through scripted ``responses``; with neither it answers
structured requests with a minimal instance of the requested JSON schema and free-text
requests with a boxed 0. ``fake.handler: "package.module:function"`` in a pipeline's ``llm``
block names a handler by import path.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from fingen.errors import ConfigError
from fingen.llm.base import ChatRequest, Completion, SchemaStyle, Usage

__all__ = ["FakeBackend", "Handler", "load_handler", "schema_instance"]

Handler = Callable[[ChatRequest], Any]


def schema_instance(
    schema: dict[str, Any], root: dict[str, Any] | None = None, name: str = ""
) -> Any:
    """A small valid instance of a JSON schema (pydantic's $defs/$ref, anyOf, enums, bounds)."""
    root = schema if root is None else root
    if "$ref" in schema:
        ref = schema["$ref"]
        target: Any = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return schema_instance(target, root, name or ref.rsplit("/", 1)[-1].lower())
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return schema_instance(options[0], root, name)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged |= part
        return schema_instance(merged, root, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else None
    if kind == "object":
        props = schema.get("properties", {})
        return {key: schema_instance(sub, root, key) for key, sub in props.items()}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        count = min(count, schema.get("maxItems", count))
        if prefix := schema.get("prefixItems"):
            return [schema_instance(s, root, name) for s in prefix]
        return [schema_instance(schema.get("items", {}), root, name) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string":
        return _string(schema, name)
    return name or "value"


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    step = 1 if integer else 0.5
    lo = schema.get("minimum", schema.get("exclusiveMinimum", -float("inf")) + step)
    hi = schema.get("maximum", schema.get("exclusiveMaximum", float("inf")) - step)
    value = min(max(1, lo), hi)
    return int(value) if integer else float(value)


_FORMATS = {
    "date": "2024-01-02",
    "date-time": "2024-01-02T03:04:05Z",
    "email": "a@b.co",
    "uri": "https://example.com",
    "uuid": "12345678-1234-5678-1234-567812345678",
}


def _string(schema: dict[str, Any], name: str) -> str:
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    text = (name or "text").ljust(schema.get("minLength", 0), "x")
    return text[: schema.get("maxLength", len(text))]


def load_handler(path: str) -> Handler:
    """Import ``"package.module:function"``; the callable answers fake requests."""
    module, _, attr = path.partition(":")
    try:
        handler = getattr(importlib.import_module(module), attr or "handler")
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot import {path!r}: {exc}", where="llm.fake.handler") from None
    if not callable(handler):
        raise ConfigError(f"{path!r} is not callable", where="llm.fake.handler")
    return handler


def _default_reply(request: ChatRequest) -> Any:
    if request.json_schema is not None:
        return schema_instance(request.json_schema)
    return "Reasoning step.\n\\boxed{0}"


class FakeBackend:
    """Deterministic answers without a model; keeps every request in ``self.requests``.

    Args:
        handler: ``request -> reply`` (str, JSON value or ``Completion``); wins over responses.
        responses: texts answered in turn (cycled) when there is no handler.
        model: the model name the completions carry.
    """

    schema_style: SchemaStyle = "none"

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        responses: list[str] | None = None,
        model: str = "fake",
    ) -> None:
        self.model = model
        self.handler = handler
        self.responses = list(responses or [])
        self.requests: list[ChatRequest] = []

    def reply(self, request: ChatRequest) -> Any:
        if self.handler is not None:
            return self.handler(request)
        if self.responses:
            return self.responses[(len(self.requests) - 1) % len(self.responses)]
        return _default_reply(request)

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        reply = self.reply(request)
        if isinstance(reply, Completion):
            return reply
        text = reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)
        prompt_chars = sum(len(m.get("content", "")) for m in request.messages)
        return Completion(
            text=text,
            model=self.model,
            usage=Usage(prompt_tokens=prompt_chars // 4, completion_tokens=len(text) // 4),
        )

    async def aclose(self) -> None:
        return None
