"""Training exports for TRL, conversational: every row holds chat messages, so TRL's
``SFTTrainer``, ``DPOTrainer`` and ``GRPOTrainer`` apply the model's chat template alike.

- SFT ``messages``: ``[user, assistant]``;
- DPO ``prompt`` ``[user]``, ``chosen`` ``[assistant]``, ``rejected`` ``[assistant]``;
- RL (GRPO) ``prompt`` ``[user]`` and ``answer`` (with ``items``: ``answer_type``, ``scale``),
  the extra columns TRL hands to :func:`fingen.reasoning.reward.accuracy_reward`.

Files: ``<out_dir>/<kind>/<split>.jsonl`` and/or ``.parquet``; every sample of one QA item,
and every item of one source document, is in one split (:func:`training_splits`)::

    load_dataset("parquet", data_files={"train": "exports/training/dpo/train.parquet",
                                        "dev": "exports/training/dpo/dev.parquet"})
    load_dataset("exports/training/dpo")  # the folder: parquet, splits train / validation
    ds = training_dataset("dpo", records)  # in memory

``with_meta`` adds provenance columns (SFT: source, qa_id; DPO: rejected_reason, qa_id; RL:
source, qa_id). Message lists are ``{role, content}`` structs, every other value a string
(None is written as ""), so JSON loads back with exactly the declared Features.
:func:`token_lengths` measures rows for a trainer's ``max_length``. ``datasets`` and
``transformers`` are imported only inside the functions that need them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fingen.errors import MissingExtraError
from fingen.files import atomic_replace
from fingen.records import DPORecord, Passage, QAItem, RLRecord, SFTRecord
from fingen.splits import SPLITS, SplitConfig, assign_splits

if TYPE_CHECKING:
    import datasets

__all__ = [
    "FORMATS",
    "KINDS",
    "LengthCounter",
    "TrainingExport",
    "TrainingKind",
    "item_document",
    "length_counter",
    "split_key",
    "token_lengths",
    "training_columns",
    "training_dataset",
    "training_features",
    "training_rows",
    "training_splits",
    "write_training",
]

TrainingKind = Literal["sft", "dpo", "rl"]
TrainingRecord = SFTRecord | DPORecord | RLRecord
KINDS: tuple[TrainingKind, ...] = ("sft", "dpo", "rl")
FORMATS = ("jsonl", "parquet")
_RECORD = {"sft": SFTRecord, "dpo": DPORecord, "rl": RLRecord}
_BASE = {"sft": ["messages"], "dpo": ["prompt", "chosen", "rejected"], "rl": ["prompt", "answer"]}
_META = {"sft": ["source", "qa_id"], "dpo": ["rejected_reason", "qa_id"], "rl": ["source", "qa_id"]}
#: the columns holding chat messages, and the role of a column built from a plain string
_MESSAGES = {"sft": {"messages"}, "dpo": {"prompt", "chosen", "rejected"}, "rl": {"prompt"}}
_ROLE = {"prompt": "user", "chosen": "assistant", "rejected": "assistant"}
#: FinQA / ConvFinQA ids and file names start with the filing: "ADI/2009/page_49.pdf-1"
_FILING = re.compile(r"^(?:Single_|Double_)?([^/\s]+/\d{4})/")


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
    """The explicit ``datasets.Features`` of one export kind (messages: a list of
    ``{role, content}`` strings)."""
    ds = _import_datasets()
    string = ds.Value("string")
    message = ds.List({"role": string, "content": string})
    return ds.Features(
        {
            c: (message if c in _MESSAGES[kind] else string)
            for c in training_columns(kind, with_meta=with_meta, answer_info=answer_info)
        }
    )


def _string(value: Any) -> str:
    return "" if value is None else str(value)


def _messages(value: Any, column: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": _ROLE[column], "content": value}]
    return [{"role": _string(m.get("role")), "content": _string(m.get("content"))} for m in value]


def training_rows(
    kind: str,
    records: Iterable[TrainingRecord],
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
        yield {
            c: _messages(data[c], c) if c in _MESSAGES[kind] else _string(data.get(c)) for c in cols
        }


def training_dataset(
    kind: str,
    records: Iterable[TrainingRecord],
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


# -- splits -----------------------------------------------------------------------------------
def item_document(item: QAItem) -> str | None:
    """The source document of a QA item, when it is known: ``meta["doc_id"]`` (synthesized
    items; a mapped source's field), the FinQA / ConvFinQA filing (``"ADI/2009"`` from the id
    or file name), the TAT-QA table uid."""
    meta = item.meta or {}
    if meta.get("doc_id"):
        return str(meta["doc_id"])
    for name in ("filename", "conversation_id", "id"):
        value = meta.get(name)
        match = _FILING.match(value) if isinstance(value, str) else None
        if match:
            return match.group(1)
    if meta.get("table_uid"):
        return str(meta["table_uid"])
    return None


def split_key(record: TrainingRecord, items: Mapping[str, QAItem] | None = None) -> str:
    """What decides a record's split: its item's document when known, else its ``qa_id``,
    else its prompt text."""
    item = (items or {}).get(record.qa_id or "")
    document = item_document(item) if item is not None else None
    if document:
        return document
    if record.qa_id:
        return record.qa_id
    if isinstance(record, SFTRecord):
        return next((m.get("content", "") for m in record.messages if m.get("role") == "user"), "")
    return record.prompt


def training_splits(
    records: Iterable[TrainingRecord],
    config: SplitConfig,
    items: Mapping[str, QAItem] | None = None,
) -> dict[str, str]:
    """:func:`split_key` -> split for the records of every kind at once (pass them all, so an
    item's SFT, DPO and RL rows share a split). Each key is drawn like a document of
    :func:`fingen.splits.assign_splits` (``key_split``), and a split asked for but left
    empty gets the key drawn closest to it, so a small run still has a dev set."""
    keys = sorted({split_key(r, items) for r in records})
    passages = [Passage(passage_id=k, doc_id=k, text="") for k in keys]
    doc_split, _ = assign_splits([], passages, config)
    return doc_split


@dataclass
class TrainingExport:
    """What :func:`write_training` wrote: rows in all, rows per split, and the file paths by
    split and format (``paths["train"]["parquet"]``)."""

    kind: str
    rows: int
    splits: dict[str, int] = field(default_factory=dict)
    paths: dict[str, dict[str, Path]] = field(default_factory=dict)


def write_training(
    kind: str,
    records: Iterable[TrainingRecord],
    out_dir: str | Path,
    *,
    formats: Iterable[Literal["jsonl", "parquet"]] = FORMATS,
    with_meta: bool = False,
    items: Mapping[str, QAItem] | None = None,
    splits: Mapping[str, str] | None = None,
    answer_info: bool | None = None,
) -> TrainingExport:
    """Write ``<out_dir>/<kind>/<split>.jsonl`` and/or ``.parquet`` atomically.

    ``splits`` maps :func:`split_key` to a split (:func:`training_splits`); without it every
    record is in ``train``. ``items`` finds the documents of records; they add RL's
    ``answer_type`` / ``scale`` columns unless ``answer_info`` is False. A split without rows
    gets no file (an empty JSONL file does not load with ``datasets``), and files of this
    kind's splits that are not written now are removed.
    """
    _check_kind(kind)
    formats = list(dict.fromkeys(formats))
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; allowed: jsonl, parquet")
    info = items is not None and answer_info is not False
    records = list(records)
    rows = list(training_rows(kind, records, with_meta=with_meta, items=items if info else None))
    by_split: dict[str, list[dict[str, Any]]] = {}
    for rec, row in zip(records, rows, strict=True):
        name = (splits or {}).get(split_key(rec, items), "train")
        by_split.setdefault(name, []).append(row)
    result = TrainingExport(kind, len(rows))
    out = Path(out_dir) / kind
    for name in SPLITS:  # no stale split from an earlier export
        for fmt in FORMATS:
            stale = out / f"{name}.{fmt}"
            if name not in by_split or fmt not in formats:
                stale.unlink(missing_ok=True)
    features = training_features(kind, with_meta=with_meta, answer_info=info)
    for name in (s for s in SPLITS if s in by_split):
        part = by_split[name]
        result.splits[name] = len(part)
        out.mkdir(parents=True, exist_ok=True)
        paths = result.paths.setdefault(name, {})
        if "jsonl" in formats:
            path = out / f"{name}.jsonl"
            tmp = path.with_name(path.name + ".tmp")
            with tmp.open("w", encoding="utf-8") as f:
                for row in part:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            atomic_replace(tmp, path)
            paths["jsonl"] = path
        if "parquet" in formats:
            path = out / f"{name}.parquet"
            tmp = path.with_name(path.name + ".tmp")
            _import_datasets().Dataset.from_list(part, features=features).to_parquet(str(tmp))
            atomic_replace(tmp, path)
            paths["parquet"] = path
    return result


# -- token lengths ----------------------------------------------------------------------------
#: the length of one conversation (a list of ``{role, content}`` messages)
LengthCounter = Callable[[Sequence[Mapping[str, str]]], int]


def _chars(messages: Sequence[Mapping[str, str]]) -> int:
    return math.ceil(sum(len(m.get("content") or "") for m in messages) / 4)


def length_counter(tokenizer: str | None) -> tuple[LengthCounter, str]:
    """``(count, how)``: token counts with ``tokenizer`` (a local folder, a ``.gguf`` file
    or a Hugging Face name already in the local cache; loaded offline with transformers'
    ``AutoTokenizer``, conversations rendered with its chat template), else characters / 4.
    ``how`` names what counted, and why the tokenizer was not used."""
    if tokenizer is None:
        return _chars, "characters/4 (no tokenizer named)"
    try:
        from transformers import AutoTokenizer

        path = Path(tokenizer).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        else:
            tok = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    except Exception as exc:  # not installed, not cached, not a tokenizer: fall back
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return _chars, f"characters/4 (tokenizer {tokenizer!r} not loaded: {reason})"

    def count(messages: Sequence[Mapping[str, str]]) -> int:
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(msgs, tokenize=True)
            if isinstance(ids, Mapping):  # a BatchEncoding
                ids = ids["input_ids"]
            return len(ids)
        text = "\n\n".join(m["content"] for m in msgs)
        return len(tok(text, add_special_tokens=True)["input_ids"])

    return count, f"tokenizer {tokenizer}"


def _row_lengths(kind: str, row: Mapping[str, Any], count: LengthCounter) -> int:
    if kind == "sft":
        return count(row["messages"])
    if kind == "dpo":
        return max(count([*row["prompt"], *row[c]]) for c in ("chosen", "rejected"))
    return count(row["prompt"])


_MEASURED = {"sft": "messages", "dpo": "prompt + longer of chosen/rejected", "rl": "prompt"}


def token_lengths(
    kind: str, rows: Iterable[Mapping[str, Any]], count: LengthCounter
) -> dict[str, Any]:
    """``{of, rows, max, p95}`` of the rows' lengths: SFT the whole conversation, DPO the
    prompt with the longer of chosen / rejected (what TRL's ``max_length`` bounds), RL the
    prompt (GRPO does not truncate prompts). p95 is the nearest-rank 95th percentile."""
    _check_kind(kind)
    lengths = sorted(_row_lengths(kind, r, count) for r in rows)
    p95 = lengths[max(0, math.ceil(0.95 * len(lengths)) - 1)] if lengths else 0
    return {"of": _MEASURED[kind], "rows": len(lengths), "max": max(lengths, default=0),
            "p95": p95}  # fmt: skip
