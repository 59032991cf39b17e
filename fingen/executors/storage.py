"""Shards of a stage on shared storage (any fsspec path), and the per-shard request caches.

Layout under the shard root (``executor.shard_dir``, default ``<run>/shards``)::

    <stage>/input/part-00003.jsonl          the shard's input records (written by the driver)
    <stage>/out/<output>/part-00003.jsonl   its outputs (``main`` for the main output), or
                                            .parquet (one ``json`` column: the record as JSON)
    <stage>/done/part-00003.json            written last: fingerprint, input sha256, status,
                                            counters, usage (the shard's commit marker)

A shard is reused by a re-run when its marker says ``done`` with no transient failure, for
the same stage fingerprint and the same input (sha256 of its lines). Every file is written
to a temporary name and moved into place, so a killed worker leaves no half shard.

Request caches: a worker writes the answers of shard ``i`` of stage ``s`` to its own SQLite
file, ``<cache>/llm/<s>-<i>.sqlite`` (one writer per file, also across nodes), and reads the
run's cache (``cache/llm.sqlite``) as a fallback. ``merge_shard_caches`` folds those files
into the run's cache (the driver does at the start and the end of each sharded stage), so no
answered request is paid twice, whichever executor runs next.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fingen.errors import MissingExtraError
from fingen.llm.base import Completion
from fingen.llm.cache import RESPONSES_TABLE, open_cache_db

__all__ = [
    "ShardCache",
    "ShardStore",
    "StageShards",
    "cached_keys",
    "lines_sha",
    "merge_shard_caches",
]


def lines_sha(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


class ShardStore:
    """The shard root: a local path or an fsspec URL (``memory://``, ``s3://``, ...)."""

    def __init__(self, url: str | Path, fmt: str = "jsonl") -> None:
        import fsspec

        if fmt not in ("jsonl", "parquet"):
            raise ValueError(f"shard format must be jsonl or parquet, got {fmt!r}")
        self.url, self.fmt = str(url), fmt
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")

    def stage(self, key: str) -> StageShards:
        return StageShards(self, key)


class StageShards:
    """The shards of one stage."""

    def __init__(self, store: ShardStore, key: str) -> None:
        self.store, self.key = store, key
        self.fs, self.fmt = store.fs, store.fmt
        self.dir = f"{store.root}/{key}"

    # -- paths ------------------------------------------------------------------------------
    def input_path(self, i: int) -> str:
        return f"{self.dir}/input/part-{i:05d}.jsonl"

    def output_path(self, i: int, name: str) -> str:
        return f"{self.dir}/out/{name or 'main'}/part-{i:05d}.{self.fmt}"

    def marker_path(self, i: int) -> str:
        return f"{self.dir}/done/part-{i:05d}.json"

    # -- writing ----------------------------------------------------------------------------
    def _put(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)

    def _get(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as f:
            return f.read()  # type: ignore[no-any-return]

    def write_input(self, i: int, lines: list[str]) -> None:
        self._put(self.input_path(i), "".join(f"{x}\n" for x in lines).encode("utf-8"))

    def read_input(self, i: int) -> list[str]:
        return self._get(self.input_path(i)).decode("utf-8").splitlines()

    def write_outputs(self, i: int, outputs: dict[str, list[str]]) -> None:
        for name, lines in outputs.items():
            self._put(self.output_path(i, name), self._encode(lines))

    def read_output(self, i: int, name: str) -> list[str]:
        path = self.output_path(i, name)
        if not self.fs.exists(path):
            return []
        return self._decode(self._get(path))

    def output_names(self, i: int) -> list[str]:
        base = f"{self.dir}/out"
        if not self.fs.exists(base):
            return []
        names = []
        for entry in sorted(self.fs.ls(base, detail=False)):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if self.fs.exists(self.output_path(i, "" if name == "main" else name)):
                names.append("" if name == "main" else name)
        return names

    def mark(self, i: int, meta: dict[str, Any]) -> None:
        self._put(self.marker_path(i), json.dumps(meta, ensure_ascii=False).encode("utf-8"))

    def marker(self, i: int) -> dict[str, Any] | None:
        path = self.marker_path(i)
        if not self.fs.exists(path):
            return None
        try:
            return json.loads(self._get(path))  # type: ignore[no-any-return]
        except ValueError:
            return None

    def reusable(self, i: int, fingerprint: str, sha: str) -> dict[str, Any] | None:
        """The marker of shard ``i`` when its result can stand for this run, else None."""
        m = self.marker(i)
        ok = (
            m is not None
            and m.get("status") == "done"
            and m.get("fingerprint") == fingerprint
            and m.get("input_sha") == sha
            and not m.get("transient", 0)
        )
        return m if ok else None

    def clear(self) -> None:
        if self.fs.exists(self.dir):
            self.fs.rm(self.dir, recursive=True)

    # -- formats ----------------------------------------------------------------------------
    def _encode(self, lines: list[str]) -> bytes:
        if self.fmt == "jsonl":
            return "".join(f"{x}\n" for x in lines).encode("utf-8")
        pa, pq = _arrow()
        import io

        buf = io.BytesIO()
        pq.write_table(pa.table({"json": pa.array(lines, type=pa.string())}), buf)
        return buf.getvalue()

    def _decode(self, data: bytes) -> list[str]:
        if self.fmt == "jsonl":
            return data.decode("utf-8").splitlines()
        _pa, pq = _arrow()
        import io

        return [str(x) for x in pq.read_table(io.BytesIO(data)).column("json").to_pylist()]


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "ray", "Parquet shards") from exc
    return pa, pq


# -- request caches ----------------------------------------------------------------------------

_FORGOTTEN = "CREATE TABLE IF NOT EXISTS forgotten (key TEXT PRIMARY KEY)"


class ShardCache:
    """The request cache of one shard (``RequestCache``'s interface): answers go to its own
    file; lookups also read the run's cache; ``delete`` also hides the run's answer (a
    failed reply is asked again) until ``merge_shard_caches`` removes it there."""

    def __init__(self, path: str | Path, fallback: str | Path | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_cache_db(self.path)
        self._db.execute(_FORGOTTEN)
        self._fallback: sqlite3.Connection | None = None
        if fallback is not None and Path(fallback).is_file():
            uri = f"file:{Path(fallback).resolve()}?mode=ro"
            self._fallback = sqlite3.connect(uri, uri=True, check_same_thread=False)

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM responses WHERE key=?", (key,)).fetchone()
            if row is None and self._fallback is not None:
                gone = self._db.execute("SELECT 1 FROM forgotten WHERE key=?", (key,)).fetchone()
                if gone is None:
                    try:
                        row = self._fallback.execute(
                            "SELECT body FROM responses WHERE key=?", (key,)
                        ).fetchone()
                    except sqlite3.Error:
                        row = None
        if row is None:
            return None
        return Completion.model_validate_json(row[0]).model_copy(update={"cached": True})

    def put(self, key: str, completion: Completion) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, model, body) VALUES (?, ?, ?)",
                (key, completion.model, completion.model_dump_json()),
            )
            self._db.execute("DELETE FROM forgotten WHERE key=?", (key,))

    def delete(self, keys: list[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM responses WHERE key=?", [(k,) for k in keys])
            self._db.executemany(
                "INSERT OR IGNORE INTO forgotten (key) VALUES (?)", [(k,) for k in keys]
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._fallback is not None:
                self._fallback.close()
                self._fallback = None
            with contextlib.suppress(sqlite3.Error):
                self._db.close()


def merge_shard_caches(main: str | Path, shard_dir: str | Path) -> int:
    """Fold every shard cache under ``shard_dir`` into the run's cache ``main`` and remove
    them; returns the answers merged. Forgotten answers are removed from ``main`` too."""
    folder = Path(shard_dir)
    files = sorted(folder.glob("*.sqlite")) if folder.is_dir() else []
    if not files:
        return 0
    Path(main).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(main, isolation_level=None, timeout=60)
    merged = 0
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(RESPONSES_TABLE)
        for path in files:
            try:
                db.execute("ATTACH DATABASE ? AS shard", (str(path),))
            except sqlite3.Error:
                continue
            try:
                db.execute("BEGIN")
                tables = {
                    r[0]
                    for r in db.execute("SELECT name FROM shard.sqlite_master WHERE type='table'")
                }
                if "forgotten" in tables:
                    db.execute(
                        "DELETE FROM responses WHERE key IN (SELECT key FROM shard.forgotten)"
                    )
                if "responses" in tables:
                    cur = db.execute(
                        "INSERT OR REPLACE INTO responses SELECT key, model, body FROM shard.responses"
                    )
                    merged += max(cur.rowcount, 0)
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
            finally:
                db.execute("DETACH DATABASE shard")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    finally:
        db.close()
    return merged


def cached_keys(path: str | Path) -> set[str]:
    """Every key a request cache file holds (for tests and tools)."""
    if not Path(path).is_file():
        return set()
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        return {r[0] for r in db.execute("SELECT key FROM responses")}
    finally:
        db.close()
