"""Files written safely: atomic replace (temp file, fsync, rename), paths kept inside a root,
and JSONL streams. The lowest layer: anything that writes a file may use it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from fingen.errors import StoreError

__all__ = ["JsonlWriter", "atomic_replace", "atomic_write_text", "iter_jsonl", "safe_join"]

R = TypeVar("R", bound=BaseModel)


def atomic_replace(tmp: Path, path: Path) -> None:
    """fsync ``tmp`` and rename it onto ``path`` (readers see the old or the new file)."""
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    """Stream a JSONL file as dicts, or as ``model`` records when given.

    Raises:
        StoreError: a line is not JSON / not a ``model`` (the message names file and line).
    """
    from pydantic import ValidationError

    with path.open("r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield model.model_validate_json(line) if model is not None else json.loads(line)
            except (ValidationError, ValueError) as exc:
                what = model.__name__ if model is not None else "JSON"
                raise StoreError(f"{path.name}:{n}: not a valid {what}: {str(exc)[:300]}") from None


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
