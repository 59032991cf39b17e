"""Stage fingerprints: what decides a stage's output, so a finished stage re-runs only when
something that matters changed (its params and the files they name, the model settings,
the prompt templates, the embedder, and everything upstream)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fingen.config import PipelineConfig

__all__ = ["OPERATIONAL_LLM_FIELDS", "input_stamps", "stage_fingerprint"]

#: Settings that change how fast or how much is sent, never what a stage produces.
OPERATIONAL_LLM_FIELDS = {
    "concurrency",
    "rpm",
    "tpm",
    "timeout_s",
    "backoff_s",
    "max_retries",
    "prices",
    "budget",
    "cache",
}


def _stamp(path: Path) -> list[Any]:
    st = path.stat()
    if not path.is_dir():
        return [str(path), st.st_size, st.st_mtime_ns]
    h = hashlib.sha256()
    for i, f in enumerate(sorted(path.rglob("*"))):
        if i >= 100_000:
            break
        if f.is_file():
            fs = f.stat()
            h.update(f"{f.relative_to(path)}|{fs.st_size}|{fs.st_mtime_ns}\n".encode())
    return [str(path), h.hexdigest()]


def input_stamps(config: PipelineConfig, params: Any) -> list[Any]:
    """Size and mtime of every file (or folder's files) a stage's params name, so edited
    inputs re-run the stage."""
    stamps: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and 0 < len(value) < 4096:
            path = config.resolve_path(value)
            try:
                if path.exists():
                    stamps.append(_stamp(path))
            except (OSError, ValueError):
                return

    walk(params)
    return stamps


def stage_fingerprint(config: PipelineConfig, index: int, upstream: list[str], prompts: str) -> str:
    """The fingerprint of stage ``index``; ``upstream`` holds the earlier stages' ones."""
    sc = config.stages[index]
    llm = config.llm.model_dump(mode="json", exclude=OPERATIONAL_LLM_FIELDS)
    blob = json.dumps(
        [
            sc.model_dump(mode="json"),
            input_stamps(config, sc.params),
            config.lang,
            llm,
            config.embedder.model,
            prompts,
            upstream,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
