"""SQLite request cache: sha256(model, messages, sampling params, schema) -> completion.

WAL mode and one committed row per response: a run killed with SIGKILL keeps every answer it
had received, and the re-run sends none of those requests again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from fingen.llm.base import ChatRequest, Completion

__all__ = ["RESPONSES_TABLE", "RequestCache", "open_cache_db", "request_key"]


_schema_digests: dict[int, tuple[dict[str, Any], str]] = {}


def _schema_digest(schema: dict[str, Any] | None) -> str:
    # Schemas are shared objects (one per response model), so hash each once.
    if schema is None:
        return ""
    hit = _schema_digests.get(id(schema))
    if hit is None or hit[0] is not schema:
        blob = json.dumps(schema, sort_keys=True, ensure_ascii=False)
        hit = (schema, hashlib.sha256(blob.encode("utf-8")).hexdigest())
        if len(_schema_digests) > 1024:
            _schema_digests.clear()
        _schema_digests[id(schema)] = hit
    return hit[1]


def request_key(model: str, request: ChatRequest) -> str:
    """The cache key of a request to ``model``: every field that changes the answer."""
    r = request
    payload = [
        model,
        r.messages,
        r.temperature,
        r.max_tokens,
        r.top_p,
        r.seed,
        r.stop,
        _schema_digest(r.json_schema),
        r.schema_name,
        r.sample_idx,
        r.extra,
    ]
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


RESPONSES_TABLE = (
    "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, body TEXT)"
)


def open_cache_db(path: Path) -> sqlite3.Connection:
    """A request-cache file opened for one writer: autocommit, WAL, the ``responses`` table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(RESPONSES_TABLE)
    return db


class RequestCache:
    """A small persistent key -> Completion store, safe for one writer process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_cache_db(self.path)

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM responses WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        comp = Completion.model_validate_json(row[0])
        return comp.model_copy(update={"cached": True})

    def put(self, key: str, completion: Completion) -> None:
        body = completion.model_dump_json()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, model, body) VALUES (?, ?, ?)",
                (key, completion.model, body),
            )

    def delete(self, keys: list[str]) -> None:
        """Forget answers (a reply that failed: a re-run asks again)."""
        with self._lock:
            self._db.executemany("DELETE FROM responses WHERE key=?", [(k,) for k in keys])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
