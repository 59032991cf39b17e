"""The run directory: JSONL stage files written atomically, and ``manifest.json``.

Layout of ``outputs/<pipeline>/<run>/``::

    manifest.json            config (secrets removed), versions, prompt hashes, per-stage counts
    <stage>.jsonl            a stage's main output, one record per line
    <stage>.<name>.jsonl     further outputs of the stage (e.g. ``bottom_up.qrels.jsonl``)
    <stage>.failures.jsonl   rows that failed, with reason and raw text
    cache/llm.sqlite         request cache (resume without paying twice)
    exports/                 datasets written by export stages

A stage file appears only when the stage finished writing it (write to ``.tmp``, fsync,
rename), so a run killed with SIGKILL never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from fingen.errors import StoreError

__all__ = ["JsonlWriter", "RunStore", "atomic_write_text", "iter_jsonl", "safe_join"]

R = TypeVar("R", bound=BaseModel)


def safe_join(root: Path, relative: str | Path) -> Path:
    """``root / relative``, refusing anything that would land outside ``root``."""
    root_r = root.resolve()
    path = (root_r / relative).resolve()
    if path != root_r and root_r not in path.parents:
        raise StoreError(f"path '{relative}' escapes the run directory {root}")
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def iter_jsonl(path: Path, model: type[R] | None = None) -> Iterator[Any]:
    """Stream a JSONL file as dicts, or as ``model`` records when given."""
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield model.model_validate_json(line) if model is not None else json.loads(line)


class JsonlWriter:
    """Append records to ``<path>.tmp``; ``commit()`` renames it into place atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.tmp.open("w", encoding="utf-8")
        self.rows = 0

    def write(self, record: BaseModel | dict[str, Any]) -> None:
        if isinstance(record, BaseModel):
            line = record.model_dump_json()
        else:
            line = json.dumps(record, ensure_ascii=False)
        self._f.write(line + "\n")
        self.rows += 1

    def write_all(self, records: Iterable[BaseModel | dict[str, Any]]) -> int:
        for r in records:
            self.write(r)
        return self.rows

    def commit(self) -> None:
        if self._f.closed:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        self.tmp.unlink(missing_ok=True)


class RunStore:
    """Paths and files of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*.jsonl.tmp"):  # leftovers of a killed run
            stale.unlink(missing_ok=True)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def llm_cache_path(self) -> Path:
        return self.root / "cache" / "llm.sqlite"

    @property
    def embed_cache_path(self) -> Path:
        return self.root / "cache" / "embeddings.sqlite"

    def stage_path(self, stage: str, output: str = "") -> Path:
        name = f"{stage}.{output}.jsonl" if output else f"{stage}.jsonl"
        return safe_join(self.root, name)

    def path(self, relative: str | Path) -> Path:
        return safe_join(self.root, relative)

    def writer(self, stage: str, output: str = "") -> JsonlWriter:
        return JsonlWriter(self.stage_path(stage, output))

    def read(self, stage: str, output: str = "", model: type[R] | None = None) -> Iterator[Any]:
        path = self.stage_path(stage, output)
        if not path.is_file():
            raise StoreError(
                f"no output '{path.name}' in {self.root}: run the stage '{stage}' first"
            )
        return iter_jsonl(path, model)

    def load_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            return {}
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise StoreError(f"corrupt manifest {self.manifest_path}: {exc}") from None

    def save_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(
            self.manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False, default=str)
        )
