"""Ingest: files and datasets -> `Document` records -> `Passage` records (no models here)."""

from __future__ import annotations

from fingen.ingest.chunking import (
    DEFAULT_MAX_CHARS,
    chunk_document,
    chunk_documents,
    chunk_each,
    default_max_chars,
)
from fingen.ingest.decoding import decode_bytes, detect_lang
from fingen.ingest.formats import READERS, reader_for
from fingen.ingest.loaders import iter_documents, iter_files, load_documents, load_hf
from fingen.ingest.markup import html_to_text, split_front_matter
from fingen.ingest.options import (
    CFBENCHMARK_FIELDS,
    DEFAULT_MAX_BYTES,
    FINANCEBENCH_FIELDS,
    FieldMap,
    IngestOptions,
)
from fingen.ingest.select import HFSource, MetadataJoin, read_documents
from fingen.ingest.sentences import split_sentences

__all__ = [
    "CFBENCHMARK_FIELDS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHARS",
    "FINANCEBENCH_FIELDS",
    "READERS",
    "FieldMap",
    "HFSource",
    "IngestOptions",
    "MetadataJoin",
    "chunk_document",
    "chunk_documents",
    "chunk_each",
    "decode_bytes",
    "default_max_chars",
    "detect_lang",
    "html_to_text",
    "iter_documents",
    "iter_files",
    "load_documents",
    "load_hf",
    "read_documents",
    "reader_for",
    "split_front_matter",
    "split_sentences",
]
