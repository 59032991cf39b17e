"""Any QA table -> ``QAItem`` through a field mapping: JSONL/json, CSV, Hugging Face datasets.

>>> mapping = FieldMapping(question_field="q", answer_field="a", answer_type="number")
>>> items = list(load_jsonl("qa.jsonl", mapping, source="mine"))  # doctest: +SKIP

Rows missing a mapped field, or with an empty question/answer, become
``Failure(stage="sources")``. ``datasets`` is imported only inside :func:`load_hf_dataset`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from fingen.errors import InputError, MissingExtraError
from fingen.reasoning.sources import existing_path, format_gold, iter_json_records, malformed
from fingen.reasoning.verify import infer_answer_type, normalize_answer_type
from fingen.records import Failure, QAItem, content_id

__all__ = [
    "FieldMapping",
    "QASource",
    "load_csv",
    "load_hf_dataset",
    "load_jsonl",
    "load_qa",
    "rows_to_items",
]


class FieldMapping(BaseModel):
    """Which column holds what. ``answer_type`` is used when ``answer_type_field`` is unset or
    empty in a row; "auto" infers number/yes_no/choice/text from the gold answer."""

    model_config = ConfigDict(extra="forbid")

    question_field: str = "question"
    answer_field: str = "answer"
    context_field: str | None = None
    id_field: str | None = None
    answer_type_field: str | None = None
    answer_type: str = "auto"
    program_field: str | None = None
    meta_fields: list[str] = []

    @field_validator("answer_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        normalize_answer_type(value)  # raises with the allowed values
        return value


def _text(value: Any, sep: str) -> str:
    if isinstance(value, list | tuple):
        return sep.join(_text(v, sep) for v in value)
    return "" if value is None else format_gold(value)


def _row_item(row: Mapping[str, Any], idx: int | str, mapping: FieldMapping, source: str) -> QAItem:
    def get(field: str) -> Any:
        if field not in row:
            raise KeyError(f"missing field {field!r} (have: {sorted(row)[:20]})")
        return row[field]

    question = _text(get(mapping.question_field), " ").strip()
    gold = _text(get(mapping.answer_field), "; ").strip()
    if not question or not gold:
        raise ValueError("empty question or answer")
    orig_id = str(get(mapping.id_field)) if mapping.id_field else str(idx)
    kind = mapping.answer_type
    if mapping.answer_type_field and str(get(mapping.answer_type_field) or "").strip():
        kind = str(row[mapping.answer_type_field]).strip()
    kind = normalize_answer_type(kind)
    if kind == "auto":
        kind = infer_answer_type(gold)
    program = _text(get(mapping.program_field), ", ") if mapping.program_field else ""
    return QAItem(
        qa_id=content_id(source, orig_id, question),
        question=question,
        context=_text(get(mapping.context_field), "\n") if mapping.context_field else "",
        gold_answer=gold,
        answer_type=kind,
        source=source,
        program=program or None,
        meta={"id": orig_id, **{f: row.get(f) for f in mapping.meta_fields}},
    )


def rows_to_items(
    rows: Iterable[tuple[int | str, Any]], mapping: FieldMapping, source: str
) -> Iterator[QAItem | Failure]:
    """(index, row dict) pairs -> QAItem, or Failure for a bad row (passes Failures through)."""
    for idx, row in rows:
        if isinstance(row, Failure):
            yield row
            continue
        try:
            if not isinstance(row, Mapping):
                raise TypeError(f"row is {type(row).__name__}, not an object")
            yield _row_item(row, idx, mapping, source)
        except (KeyError, TypeError, ValueError) as exc:
            row_id = (
                row.get(mapping.id_field, idx)
                if isinstance(row, Mapping) and mapping.id_field
                else idx
            )
            yield malformed(row_id, exc, row)


def load_jsonl(
    path: str | Path, mapping: FieldMapping | None = None, *, source: str | None = None
) -> Iterator[QAItem | Failure]:
    """QAItems from a JSONL file (or a json list); ``source`` defaults to the file stem."""
    p = existing_path(path)
    return rows_to_items(iter_json_records(p), mapping or FieldMapping(), source or p.stem)


def load_csv(
    path: str | Path, mapping: FieldMapping | None = None, *, source: str | None = None
) -> Iterator[QAItem | Failure]:
    """QAItems from a CSV file with a header row; ``source`` defaults to the file stem."""
    p = existing_path(path)

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        with p.open(encoding="utf-8-sig", newline="") as fh:
            yield from enumerate(csv.DictReader(fh))

    return rows_to_items(rows(), mapping or FieldMapping(), source or p.stem)


def load_hf_dataset(
    name_or_path: str | Path,
    mapping: FieldMapping | None = None,
    *,
    split: str | None = None,
    source: str | None = None,
    **load_kwargs: Any,
) -> Iterator[QAItem | Failure]:
    """QAItems from a Hugging Face dataset: a ``save_to_disk`` folder or a hub/local name.

    Without ``split`` every split of a DatasetDict is read (unmapped row ids read
    ``split/index``). Raises MissingExtraError without ``datasets``, InputError when the
    dataset or split cannot be loaded.
    """
    try:
        import datasets
    except ImportError as exc:
        raise MissingExtraError("datasets", "hf", "loading a Hugging Face dataset") from exc
    path = Path(name_or_path)
    try:
        if path.exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(name_or_path), split=split, **load_kwargs)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        raise InputError(f"cannot load dataset ({exc})", path=str(name_or_path)) from exc
    if isinstance(ds, datasets.DatasetDict):
        if split is not None and split not in ds:
            raise InputError(f"no split {split!r}; have {list(ds)}", path=str(name_or_path))
        parts = [(split, ds[split])] if split is not None else list(ds.items())
    else:
        parts = [(split, ds)]
    name = source or path.name or str(name_or_path)

    def rows() -> Iterator[tuple[int | str, Any]]:
        for split_name, part in parts:
            for i, row in enumerate(part):
                yield (f"{split_name}/{i}" if split_name and len(parts) > 1 else i), row

    return rows_to_items(rows(), mapping or FieldMapping(), name)


QASource = Literal["finqa", "tatqa", "convfinqa", "jsonl", "csv", "hf"]


def load_qa(
    source: QASource,
    path: str | Path,
    *,
    name: str | None = None,
    split: str | None = None,
    fields: FieldMapping | None = None,
    skip: int = 0,
    limit: int | None = None,
) -> Iterator[QAItem | Failure]:
    """QA items of any supported source, after ``skip`` items, at most ``limit`` of them;
    unreadable rows and repeated ``qa_id`` s are Failures (``duplicate``)."""
    from fingen.reasoning.sources import LOADERS

    name, mapping = name or source, fields or FieldMapping()
    if source in LOADERS:
        rows = LOADERS[source](str(path), source=name)
    elif source == "hf":
        rows = load_hf_dataset(path, mapping, split=split, source=name)
    else:
        rows = (load_jsonl if source == "jsonl" else load_csv)(path, mapping, source=name)
    seen: set[str] = set()
    skipped = 0
    for row in rows:
        if limit is not None and len(seen) >= limit:
            return
        if isinstance(row, Failure):
            yield row
        elif skipped < skip:
            skipped += 1
        elif row.qa_id in seen:
            yield Failure(stage="qa_source", item_id=row.qa_id, reason="duplicate")
        else:
            seen.add(row.qa_id)
            yield row
