"""Ingest options: the field mapping for tabular inputs and per-run limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CFBENCHMARK_FIELDS",
    "DEFAULT_MAX_BYTES",
    "FINANCEBENCH_FIELDS",
    "FieldMap",
    "IngestOptions",
]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024


class FieldMap(BaseModel):
    """Which column of a row holds each `Document` field; unmapped columns go to `meta`.

    `id_field`, when set and present, is used verbatim as `doc_id` (else a content hash).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_field: str = "text"
    id_field: str | None = None
    title_field: str | None = None
    date_field: str | None = None
    industry_field: str | None = None
    company_field: str | None = None
    doc_type_field: str | None = None
    lang_field: str | None = None

    def mapped(self) -> dict[str, str]:
        """Document attribute -> source column, for the optional fields that are set."""
        pairs = {
            "title": self.title_field,
            "date": self.date_field,
            "industry": self.industry_field,
            "company": self.company_field,
            "doc_type": self.doc_type_field,
            "lang": self.lang_field,
        }
        return {attr: col for attr, col in pairs.items() if col}


#: FinanceBench pages (`pages.jsonl.gz`: {doc_id, doc_name, page, text}); `page` goes to meta.
FINANCEBENCH_FIELDS = FieldMap(text_field="text", id_field="doc_id", title_field="doc_name")
#: CFBenchmark rows ({id, input, instruction, response}): the report excerpt is `input`.
CFBENCHMARK_FIELDS = FieldMap(text_field="input", id_field="id")


class IngestOptions(BaseModel):
    """How files are read.

    Attributes:
        fields: column mapping for JSONL/CSV/HF rows.
        lang: force this language on every document (else detected per document).
        max_bytes: larger single-document files (and larger JSONL lines) become
            `Failure(reason="too_large")`; JSONL/CSV files themselves are streamed at any size.
        limit: stop after this many documents (failures do not count).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: FieldMap = Field(default_factory=FieldMap)
    lang: str | None = None
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    limit: int | None = Field(default=None, ge=1)
