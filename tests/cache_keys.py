"""What a run's request cache holds, and the cache key of a request the scripted server saw."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from fingen.llm.base import ChatRequest
from fingen.llm.cache import request_key

__all__ = ["cached_keys", "key_of"]


def cached_keys(run_dir: Path) -> set[str]:
    """The keys in ``<run>/cache/llm.sqlite``."""
    with sqlite3.connect(run_dir / "cache" / "llm.sqlite") as db:
        return {row[0] for row in db.execute("SELECT key FROM responses")}


def key_of(record: dict[str, Any], base_url: str) -> str:
    """The engine's cache key of a request the scripted server recorded (the ``openai``
    backend's identity: base URL and model)."""
    body = record["body"]
    schema = (body.get("response_format") or {}).get("json_schema") or {}
    request = ChatRequest(
        messages=body["messages"],
        temperature=body["temperature"],
        max_tokens=body["max_tokens"],
        top_p=body.get("top_p"),
        seed=body.get("seed"),
        stop=body.get("stop"),
        json_schema=schema.get("schema"),
        schema_name=schema.get("name", "response"),
    )
    return request_key(f"openai:{base_url}:{body['model']}", request)
