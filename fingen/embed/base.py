"""The embedder seam: any object with `name`, `dim` and `encode(...)` is an `Embedder`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np

__all__ = ["Embedder", "EncodeKind", "check_kind", "l2_normalize"]

EncodeKind = Literal["query", "passage"]


@runtime_checkable
class Embedder(Protocol):
    """Text -> L2-normalized float32 vectors (shape `(len(texts), dim)`).

    `kind` selects query or passage encoding for asymmetric models (e5 prefixes); symmetric
    models ignore it.
    """

    name: str
    dim: int

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: EncodeKind = "passage",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray: ...


def check_kind(kind: str) -> EncodeKind:
    """Validate `kind` at run time; the message lists the allowed values."""
    allowed = get_args(EncodeKind)
    if kind not in allowed:
        raise ValueError(f"kind must be one of {allowed}, got {kind!r}")
    return kind  # type: ignore[return-value]


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (all-zero rows stay zero)."""
    out = np.asarray(vectors, dtype=np.float32)
    if out.ndim == 1:
        out = out[None, :]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0).astype(np.float32)
