"""Embedders (sentence-transformers, packaged MiniLM and e5), an embedding cache, dense
indexes (exact numpy, faiss) and BM25. Heavy packages are imported only when used."""

from __future__ import annotations

from fingen.embed.base import Embedder, EncodeKind, check_kind, l2_normalize
from fingen.embed.bm25 import BM25Index, tokenize
from fingen.embed.cache import CachedEmbedder, EmbeddingCache, cache_key
from fingen.embed.index import ExactIndex, FaissIndex, VectorIndex, build_index, top_k
from fingen.embed.models import (
    DEFAULT_EMBEDDER,
    E5_NAME,
    EMBEDDERS,
    MINILM_NAME,
    E5Embedder,
    SentenceTransformerEmbedder,
    load_embedder,
)

__all__ = [
    "DEFAULT_EMBEDDER",
    "E5_NAME",
    "EMBEDDERS",
    "MINILM_NAME",
    "BM25Index",
    "CachedEmbedder",
    "E5Embedder",
    "Embedder",
    "EmbeddingCache",
    "EncodeKind",
    "ExactIndex",
    "FaissIndex",
    "SentenceTransformerEmbedder",
    "VectorIndex",
    "build_index",
    "cache_key",
    "check_kind",
    "l2_normalize",
    "load_embedder",
    "tokenize",
    "top_k",
]
