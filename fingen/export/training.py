"""Training exports: SFT ``messages``, DPO ``{prompt, chosen, rejected}``, RL ``{prompt, answer}``.

Each kind is written as JSONL and/or parquet (``<out_dir>/<kind>.jsonl``, ``.parquet``) and is
available as a ``datasets.Dataset`` with explicit Features, so TRL's ``SFTTrainer``,
``DPOTrainer`` and ``GRPOTrainer`` take it as is::

    ds = training_dataset("dpo", records)
    load_dataset("json", data_files="exports/training/dpo.jsonl", split="train")

``with_meta`` adds provenance columns (SFT: source, qa_id; DPO: rejected_reason, qa_id; RL:
source, qa_id). For RL, ``items`` (qa_id -> QAItem) adds ``answer_type`` and ``scale`` columns,
which :func:`fingen.reasoning.reward.accuracy_reward` reads. Every value is a string (None is
written as ""), so JSON loads back with exactly the declared Features. ``datasets`` is imported
only inside the functions that need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fingen.errors import MissingExtraError
from fingen.files import atomic_replace
from fingen.records import DPORecord, QAItem, RLRecord, SFTRecord

if TYPE_CHECKING:
    import datasets

__all__ = [
    "KINDS",
    "TrainingExport",
    "TrainingKind",
    "training_columns",
    "training_dataset",
    "training_features",
    "training_rows",
    "write_training",
]

TrainingKind = Literal["sft", "dpo", "rl"]
KINDS: tuple[TrainingKind, ...] = ("sft", "dpo", "rl")
_RECORD = {"sft": SFTRecord, "dpo": DPORecord, "rl": RLRecord}
_BASE = {"sft": ["messages"], "dpo": ["prompt", "chosen", "rejected"], "rl": ["prompt", "answer"]}
_META = {"sft": ["source", "qa_id"], "dpo": ["rejected_reason", "qa_id"], "rl": ["source", "qa_id"]}


def _check_kind(kind: str) -> None:
    if kind not in _RECORD:
        raise ValueError(f"unknown training kind {kind!r}; allowed: {list(KINDS)}")


def training_columns(kind: str, *, with_meta: bool = False, answer_info: bool = False) -> list[str]:
    """The column names of one export kind, in order."""
    _check_kind(kind)
    cols = list(_BASE[kind])
    if kind == "rl" and answer_info:
        cols += ["answer_type", "scale"]
    return cols + (list(_META[kind]) if with_meta else [])


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a core dependency
        raise MissingExtraError("datasets", "hf", "training exports") from exc
    return datasets


def training_features(
    kind: str, *, with_meta: bool = False, answer_info: bool = False
) -> datasets.Features:
    """The explicit ``datasets.Features`` of one export kind."""
    ds = _import_datasets()
    string = ds.Value("string")
    message = ds.List({"role": string, "content": string})
    return ds.Features(
        {
            c: (message if c == "messages" else string)
            for c in training_columns(kind, with_meta=with_meta, answer_info=answer_info)
        }
    )


def _string(value: Any) -> str:
    return "" if value is None else str(value)


def training_rows(
    kind: str,
    records: Iterable[SFTRecord | DPORecord | RLRecord],
    *,
    with_meta: bool = False,
    items: Mapping[str, QAItem] | None = None,
) -> Iterator[dict[str, Any]]:
    """Plain dict rows with exactly the columns of :func:`training_columns`.

    Raises:
        TypeError: a record of another kind.
    """
    cols = training_columns(kind, with_meta=with_meta, answer_info=items is not None)
    expected = _RECORD[kind]
    for rec in records:
        if not isinstance(rec, expected):
            raise TypeError(f"{kind} export got a {type(rec).__name__}")
        data = rec.model_dump()
        if kind == "rl" and items is not None:
            item = items.get(rec.qa_id or "")
            data["answer_type"] = item.answer_type if item else ""
            data["scale"] = (item.meta.get("scale") or "") if item else ""
        row: dict[str, Any] = {}
        for c in cols:
            if c == "messages":
                row[c] = [
                    {"role": _string(m.get("role")), "content": _string(m.get("content"))}
                    for m in data[c]
                ]
            else:
                row[c] = _string(data.get(c))
        yield row


def training_dataset(
    kind: str,
    records: Iterable[SFTRecord | DPORecord | RLRecord],
    *,
    with_meta: bool = False,
    items: Mapping[str, QAItem] | None = None,
) -> datasets.Dataset:
    """The records as a ``datasets.Dataset`` with explicit Features."""
    ds = _import_datasets()
    features = training_features(kind, with_meta=with_meta, answer_info=items is not None)
    rows = list(training_rows(kind, records, with_meta=with_meta, items=items))
    if not rows:
        return ds.Dataset.from_dict({c: [] for c in features}, features=features)
    return ds.Dataset.from_list(rows, features=features)


@dataclass
class TrainingExport:
    """What :func:`write_training` wrote: row count and file paths by format."""

    kind: str
    rows: int
    paths: dict[str, Path] = field(default_factory=dict)


def write_training(
    kind: str,
    records: Iterable[SFTRecord | DPORecord | RLRecord],
    out_dir: str | Path,
    *,
    formats: Iterable[Literal["jsonl", "parquet"]] = ("jsonl", "parquet"),
    with_meta: bool = False,
    items: Mapping[str, QAItem] | None = None,
) -> TrainingExport:
    """Write ``<out_dir>/<kind>.jsonl`` and/or ``.parquet`` atomically (tmp file + rename).

    Returns the row count and paths. Nothing is written for zero records (an empty JSONL file
    does not load with ``datasets``); ``TrainingExport.paths`` is then empty.
    """
    formats = list(dict.fromkeys(formats))
    unknown = set(formats) - {"jsonl", "parquet"}
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; allowed: jsonl, parquet")
    rows = list(training_rows(kind, records, with_meta=with_meta, items=items))
    result = TrainingExport(kind, len(rows))
    if not rows:
        return result
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "jsonl" in formats:
        path = out / f"{kind}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        atomic_replace(tmp, path)
        result.paths["jsonl"] = path
    if "parquet" in formats:
        ds = _import_datasets()
        features = training_features(kind, with_meta=with_meta, answer_info=items is not None)
        path = out / f"{kind}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        ds.Dataset.from_list(rows, features=features).to_parquet(str(tmp))
        atomic_replace(tmp, path)
        result.paths["parquet"] = path
    return result
