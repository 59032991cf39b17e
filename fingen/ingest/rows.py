"""Tabular rows (JSONL, CSV, HF datasets) -> `Document`, through a `FieldMap`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from fingen.ingest.decoding import detect_lang
from fingen.ingest.options import FieldMap
from fingen.records import Document, Failure, content_id

__all__ = ["row_to_document"]


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def row_to_document(
    row: Mapping[str, Any],
    fields: FieldMap,
    *,
    source: str,
    id_key: str,
    position: int,
    item_id: str,
    lang: str | None = None,
) -> Document | Failure:
    """Map one row to a `Document`, or a `Failure` ("missing_field", "empty").

    Args:
        row: the parsed row.
        fields: the field mapping.
        source: recorded as `Document.source`.
        id_key: stable name of the input (relative path or dataset name) hashed into `doc_id`.
        position: line/row number hashed into `doc_id`.
        item_id: how a failure names this row (e.g. "path:line").
        lang: forced language; else the mapped lang column; else detected from the text.
    """
    if fields.text_field not in row or row[fields.text_field] is None:
        return Failure(
            stage="ingest",
            item_id=item_id,
            reason="missing_field",
            detail=f"no {fields.text_field!r} in row (keys: {sorted(row)[:20]})",
        )
    raw_text = row[fields.text_field]
    if not isinstance(raw_text, str):
        return Failure(
            stage="ingest",
            item_id=item_id,
            reason="missing_field",
            detail=f"{fields.text_field!r} is {type(raw_text).__name__}, not a string",
        )
    if not raw_text.strip():
        return Failure(stage="ingest", item_id=item_id, reason="empty")
    text = raw_text.strip()
    values = {attr: _scalar(row.get(col)) for attr, col in fields.mapped().items()}
    native_id = _scalar(row.get(fields.id_field)) if fields.id_field else None
    doc_id = native_id or content_id(id_key, position, text)
    used = {fields.text_field, fields.id_field, *fields.mapped().values()}
    meta = {str(k): _jsonable(v) for k, v in row.items() if k not in used}
    return Document(
        doc_id=doc_id,
        title=values.get("title") or "",
        text=text,
        lang=lang or values.get("lang") or detect_lang(text),
        date=values.get("date"),
        industry=values.get("industry"),
        company=values.get("company"),
        doc_type=values.get("doc_type"),
        source=source,
        meta=meta,
    )
