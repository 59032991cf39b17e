"""Stages ``ingest`` (files or a HF dataset -> Document) and ``chunk`` (Document -> Passage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fingen.errors import ConfigError
from fingen.ingest import CFBENCHMARK_FIELDS, FINANCEBENCH_FIELDS, FieldMap, chunk_each
from fingen.ingest.select import HFSource, MetadataJoin, load_join, read_documents
from fingen.stages.base import StageContext, StageParams, stage

__all__ = ["ChunkParams", "IngestParams", "chunk", "ingest"]

_PRESETS = {"financebench": FINANCEBENCH_FIELDS, "cfbenchmark": CFBENCHMARK_FIELDS}


class IngestParams(StageParams):
    file_params = ("paths", "join.path")

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


@stage(IngestParams, outputs={"": "document"})
def ingest(ctx: StageContext, params: IngestParams) -> None:
    """Read documents; bad files are skipped and reported, never fatal."""
    if not params.paths and params.hf is None:
        raise ConfigError("give 'paths' or 'hf'", where=f"stages.{ctx.key}.params")
    join = None
    if params.join is not None:
        join = (params.join, load_join(params.join, ctx.config.resolve_path(params.join.path)))
    documents = read_documents(
        [ctx.config.resolve_path(p) for p in params.paths],
        hf=params.hf,
        fields=params.fields or _PRESETS.get(params.preset) or FieldMap(),
        lang=params.lang,
        max_bytes=params.max_bytes,
        skip=params.skip,
        stride=params.stride,
        limit=params.limit,
        join=join,
        min_chars=params.min_chars,
    )
    bar, langs = ctx.progress("documents"), dict[str, int]()
    for doc in ctx.count(documents):
        ctx.output().write(doc)
        langs[doc.lang] = langs.get(doc.lang, 0) + 1
        bar.advance()
    ctx.stats.extra["languages"] = langs


class ChunkParams(StageParams):
    input: str | list[str] | None = Field(None, description="Documents (default: the run's)")
    max_chars: int | None = Field(
        None, gt=0, description="passage size; default 1200 (en) / 600 (zh)"
    )
    overlap_sentences: int = Field(0, ge=0, description="sentences repeated between passages")
    min_chars: int | None = Field(
        None, ge=0, description="shorter passages merge into the previous"
    )


@stage(ChunkParams, inputs={"input": "document"}, outputs={"": "passage"})
def chunk(ctx: StageContext, params: ChunkParams) -> None:
    """Split documents into passages of whole sentences, keeping sentence offsets."""
    bar, out = ctx.progress("passages"), ctx.output()
    options = params.model_dump(include={"max_chars", "overlap_sentences", "min_chars"})
    for passages in ctx.count(chunk_each(ctx.input("input", params.input), **options)):
        out.write_all(passages)
        bar.advance()
