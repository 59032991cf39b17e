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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from fingen.errors import InputError, RunLocked, StoreError
from fingen.files import JsonlWriter, atomic_write_text, iter_jsonl, safe_join

__all__ = ["JsonlWriter", "RunStore", "atomic_write_text", "iter_jsonl", "safe_join"]

R = TypeVar("R", bound=BaseModel)


class RunStore:
    """Paths and files of one run directory.

    A run that writes takes the directory's lock (``lock()``, ``fcntl.flock`` on
    ``.fingen.lock``, held until ``unlock()`` or the process ends): one writer per run
    directory. Readers (report, audit, publish) take no lock.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        if self.root.exists() and not self.root.is_dir():
            raise InputError("the run directory is a file", path=str(self.root))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create the run directory: {exc.strerror}", path=str(self.root)
            ) from None
        self._lock: Any = None

    def lock(self) -> None:
        """Become the run directory's only writer, then remove a killed run's leftovers.

        Raises:
            RunLocked: another process writes it.
            InputError: the directory is not writable.
        """
        import fcntl

        path = self.root / ".fingen.lock"
        try:
            handle = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write here: {exc.strerror}", path=str(self.root)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            pid = handle.read().strip()
            handle.close()
            raise RunLocked(str(self.root), pid) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle
        for stale in self.root.glob("*.jsonl.tmp"):  # leftovers of a killed run
            stale.unlink(missing_ok=True)
        probe = self.root / ".fingen.write-test"
        try:
            probe.write_text("", encoding="utf-8")
            probe.unlink()
        except OSError as exc:
            self.unlock()
            raise InputError(f"cannot write here: {exc.strerror}", path=str(self.root)) from None

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

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

    def clear_stage(self, stage: str) -> None:
        """Remove a stage's files from an earlier run, so none can outlive a re-run."""
        for path in [self.stage_path(stage), *self.root.glob(f"{stage}.*.jsonl")]:
            path.unlink(missing_ok=True)

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
