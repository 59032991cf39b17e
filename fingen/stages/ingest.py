"""Stages ``ingest`` (files or a HF dataset -> Document) and ``chunk`` (Document -> Passage)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from fingen.ingest import (
    CFBENCHMARK_FIELDS,
    FINANCEBENCH_FIELDS,
    FieldMap,
    IngestOptions,
    chunk_document,
    iter_documents,
    load_hf,
)
from fingen.records import Document, Failure
from fingen.stages.base import StageContext, StageParams, stage

__all__ = ["ChunkParams", "IngestParams", "chunk", "ingest"]

_PRESETS = {"financebench": FINANCEBENCH_FIELDS, "cfbenchmark": CFBENCHMARK_FIELDS}


class HFSource(StageParams):
    name: str = Field(description="hub name, data-files folder or a save_to_disk folder")
    split: str = "train"


class MetadataJoin(StageParams):
    """Fill Document fields from a metadata table (JSONL/CSV) joined on a key."""

    path: str = Field(description="JSONL or CSV file with one row per key")
    key: str = Field(description="column of the table holding the join key")
    doc_key: str = Field("title", description="Document field or meta key matched against key")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Document field -> table column (title, date, industry, company, doc_type, lang)",
    )


_JOINABLE = {"title", "date", "industry", "company", "doc_type", "lang"}


def _load_join(ctx: StageContext, join: MetadataJoin) -> dict[str, dict[str, Any]]:
    import csv
    import json

    from fingen.errors import ConfigError, InputError

    bad = set(join.fields) - _JOINABLE
    if bad:
        raise ConfigError(
            f"cannot fill {sorted(bad)}; allowed: {sorted(_JOINABLE)}",
            where=f"stages.{ctx.key}.params.join.fields",
        )
    path = ctx.config.resolve_path(join.path)
    if not path.is_file():
        raise InputError("metadata table not found", path=str(path))
    with path.open(encoding="utf-8-sig", newline="") as f:
        if path.suffix == ".csv":
            rows: list[dict[str, Any]] = list(csv.DictReader(f))
        else:
            rows = [json.loads(line) for line in f if line.strip()]
    return {str(r[join.key]): r for r in rows if join.key in r}


def _joined(doc: Document, join: MetadataJoin, table: dict[str, dict[str, Any]]) -> Document:
    value = (
        getattr(doc, join.doc_key, None)
        if join.doc_key in Document.model_fields
        else doc.meta.get(join.doc_key)
    )
    row = table.get(str(value))
    if row is None:
        return doc
    update = {f: str(row[col]) for f, col in join.fields.items() if row.get(col) not in (None, "")}
    return doc.model_copy(update=update)


class IngestParams(StageParams):
    paths: list[str] = Field(default_factory=list, description="files or directories")
    hf: HFSource | None = Field(None, description="a Hugging Face dataset instead of files")
    preset: Literal["none", "financebench", "cfbenchmark"] = Field(
        "none", description="field map preset"
    )
    fields: FieldMap | None = Field(
        None, description="JSONL/CSV/HF columns: text_field, id_field, ..."
    )
    lang: str | None = Field(None, description="force a language (default: detected)")
    limit: int | None = Field(None, ge=1)
    skip: int = Field(0, ge=0, description="skip this many documents first")
    stride: int = Field(1, ge=1, description="keep every N-th document (a spread-out sample)")
    join: MetadataJoin | None = Field(None, description="fill fields from a metadata table")
    min_chars: int = Field(0, ge=0, description="shorter documents are skipped as 'too_short'")
    max_bytes: int = Field(50 * 1024 * 1024, gt=0)


def _source(ctx: StageContext, params: IngestParams) -> Iterator[Document | Failure]:
    fields = params.fields or _PRESETS.get(params.preset) or FieldMap()
    limit = params.skip + params.limit * params.stride if params.limit else None
    options = IngestOptions(
        fields=fields, lang=params.lang, max_bytes=params.max_bytes, limit=limit
    )
    if params.hf is not None:
        yield from load_hf(params.hf.name, params.hf.split, fields, options=options)
    if params.paths:
        yield from iter_documents(
            [ctx.config.resolve_path(p) for p in params.paths], options=options
        )


@stage(IngestParams)
def ingest(ctx: StageContext, params: IngestParams) -> None:
    """Read documents; bad files are skipped and reported, never fatal."""
    from fingen.errors import ConfigError

    if not params.paths and params.hf is None:
        raise ConfigError("give 'paths' or 'hf'", where=f"stages.{ctx.key}.params")
    bar = ctx.progress("documents")
    ctx.output()  # exists even when every input fails
    table = _load_join(ctx, params.join) if params.join else {}
    seen = 0
    seen_ids: set[str] = set()
    langs: dict[str, int] = {}
    for item in _source(ctx, params):
        ctx.stats.inputs += 1
        if isinstance(item, Failure):
            ctx.fail(item)
            continue
        seen += 1
        if seen <= params.skip or (seen - params.skip - 1) % params.stride:
            ctx.stats.inputs -= 1  # not selected: neither an input nor a failure
            continue
        if params.join is not None:
            item = _joined(item, params.join, table)
        if item.doc_id in seen_ids:
            ctx.fail(
                Failure(
                    stage=ctx.key,
                    item_id=item.doc_id,
                    reason="duplicate_id",
                    detail="an earlier document has this doc_id; it is kept",
                )
            )
            continue
        seen_ids.add(item.doc_id)
        if len(item.text.strip()) < params.min_chars:
            ctx.fail(
                Failure(
                    stage=ctx.key,
                    item_id=item.doc_id,
                    reason="too_short",
                    detail=f"{len(item.text.strip())} < {params.min_chars} chars",
                )
            )
            continue
        ctx.output().write(item)
        ctx.stats.succeeded += 1
        langs[item.lang] = langs.get(item.lang, 0) + 1
        bar.advance()
    ctx.stats.extra["languages"] = langs


class ChunkParams(StageParams):
    input: str = Field("ingest", description="stage output holding the Documents")
    max_chars: int | None = Field(
        None, gt=0, description="passage size; default 1200 (en) / 600 (zh)"
    )
    overlap_sentences: int = Field(0, ge=0, description="sentences repeated between passages")
    min_chars: int | None = Field(
        None, ge=0, description="shorter passages merge into the previous"
    )


@stage(ChunkParams)
def chunk(ctx: StageContext, params: ChunkParams) -> None:
    """Split documents into passages of whole sentences, keeping sentence offsets."""
    bar = ctx.progress("passages")
    out = ctx.output()
    for doc in ctx.read(params.input, Document):
        ctx.stats.inputs += 1
        try:
            passages = chunk_document(
                doc,
                max_chars=params.max_chars,
                overlap_sentences=params.overlap_sentences,
                min_chars=params.min_chars,
            )
        except ValueError as exc:
            ctx.fail(
                Failure(stage=ctx.key, item_id=doc.doc_id, reason="chunk_error", detail=str(exc))
            )
            continue
        if not passages:
            ctx.fail(Failure(stage=ctx.key, item_id=doc.doc_id, reason="no_passages"))
            continue
        for p in passages:
            out.write(p)
        ctx.stats.succeeded += 1
        bar.advance()
