"""Reading a corpus as a stage does: sources, a spread-out sample, metadata, checks.

``read_documents`` streams Documents (and Failures for what cannot be used) from files
and/or a Hugging Face dataset: it keeps every ``stride``-th document after ``skip``, fills
fields from a metadata table (``MetadataJoin``), and reports duplicate ids and too-short
documents. Example::

    for item in read_documents(["filings/"], stride=10, limit=100, min_chars=800):
        ...  # Document, or Failure(reason="duplicate_id" | "too_short" | a reader's reason)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fingen.errors import ConfigError, InputError
from fingen.ingest.loaders import iter_documents, load_hf
from fingen.ingest.options import FieldMap, IngestOptions
from fingen.records import Document, Failure

__all__ = ["JOINABLE", "HFSource", "MetadataJoin", "join_document", "load_join", "read_documents"]

JOINABLE = frozenset({"title", "date", "industry", "company", "doc_type", "lang"})


class HFSource(BaseModel):
    """A Hugging Face dataset as the corpus."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="hub name, data-files folder or a save_to_disk folder")
    split: str = "train"


class MetadataJoin(BaseModel):
    """Fill Document fields from a metadata table (JSONL/CSV) joined on a key."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="JSONL or CSV file with one row per key")
    key: str = Field(description="column of the table holding the join key")
    doc_key: str = Field("title", description="Document field or meta key matched against key")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Document field -> table column (title, date, industry, company, doc_type, lang)",
    )


def load_join(join: MetadataJoin, path: Path) -> dict[str, dict[str, Any]]:
    """The metadata table at ``path`` as key -> row.

    Raises:
        ConfigError: a field that cannot be filled.
        InputError: the table is missing.
    """
    bad = set(join.fields) - JOINABLE
    if bad:
        raise ConfigError(f"cannot fill {sorted(bad)}; allowed: {sorted(JOINABLE)}",
                          where="join.fields")  # fmt: skip
    if not path.is_file():
        raise InputError("metadata table not found", path=str(path))
    with path.open(encoding="utf-8-sig", newline="") as f:
        if path.suffix == ".csv":
            rows: list[dict[str, Any]] = list(csv.DictReader(f))
        else:
            rows = [json.loads(line) for line in f if line.strip()]
    return {str(r[join.key]): r for r in rows if join.key in r}


def join_document(doc: Document, join: MetadataJoin, table: dict[str, dict[str, Any]]) -> Document:
    """``doc`` with the joined row's fields filled in (unchanged when no row matches)."""
    if join.doc_key in Document.model_fields:
        value = getattr(doc, join.doc_key, None)
    else:
        value = doc.meta.get(join.doc_key)
    row = table.get(str(value))
    if row is None:
        return doc
    update = {f: str(row[col]) for f, col in join.fields.items() if row.get(col) not in (None, "")}
    return doc.model_copy(update=update)


def read_documents(
    paths: Sequence[Path] = (),
    *,
    hf: HFSource | None = None,
    fields: FieldMap | None = None,
    lang: str | None = None,
    max_bytes: int = 50 * 1024 * 1024,
    skip: int = 0,
    stride: int = 1,
    limit: int | None = None,
    join: tuple[MetadataJoin, dict[str, dict[str, Any]]] | None = None,
    min_chars: int = 0,
) -> Iterator[Document | Failure]:
    """Selected Documents (every ``stride``-th after ``skip``, at most ``limit``) and a
    Failure for every unusable input; documents not selected are not yielded at all."""
    fields = fields or FieldMap()
    read_cap = skip + limit * stride if limit else None
    options = IngestOptions(fields=fields, lang=lang, max_bytes=max_bytes, limit=read_cap)
    sources: list[Iterator[Document | Failure]] = []
    if hf is not None:
        sources.append(load_hf(hf.name, hf.split, fields, options=options))
    if paths:
        sources.append(iter_documents(list(paths), options=options))
    seen = 0
    ids: set[str] = set()
    for source in sources:
        for item in source:
            if isinstance(item, Failure):
                yield item
                continue
            seen += 1
            if seen <= skip or (seen - skip - 1) % stride:
                continue
            if join is not None:
                item = join_document(item, *join)
            if item.doc_id in ids:
                detail = "an earlier document has this doc_id; it is kept"
                yield Failure(stage="ingest", item_id=item.doc_id, reason="duplicate_id",
                              detail=detail)  # fmt: skip
                continue
            ids.add(item.doc_id)
            size = len(item.text.strip())
            if size < min_chars:
                yield Failure(stage="ingest", item_id=item.doc_id, reason="too_short",
                              detail=f"{size} < {min_chars} chars")  # fmt: skip
                continue
            yield item
