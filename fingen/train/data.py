"""A run's retrieval exports as trainer rows: where they are, their instruction, and the
train split as (anchor, positive, negative_1..k) n-tuples plus pairs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fingen.errors import InputError

__all__ = ["ExportsSource", "TrainingData", "jsonl_rows", "load_training_data", "resolve_exports"]


@dataclass(frozen=True)
class ExportsSource:
    """Where a run's exports are, the run directory (when known) and its query instruction."""

    exports: Path
    run_dir: Path | None
    instruction: str | None


@dataclass
class TrainingData:
    """The train split as trainer rows: n-tuples with ``negatives`` hard negatives each and
    pairs (queries whose group has fewer negatives, or all of them when ``negatives`` is 0)."""

    ntuples: list[dict[str, str]] = field(default_factory=list)
    pairs: list[dict[str, str]] = field(default_factory=list)
    negatives: int = 0
    available: int = 0  # most negatives any (query, positive) has in the export

    @property
    def total(self) -> int:
        return len(self.ntuples) + len(self.pairs)

    def datasets(self) -> Any:
        """A ``datasets.Dataset`` (one kind of row) or a ``DatasetDict`` of both kinds."""
        import datasets

        def table(rows: list[dict[str, str]]) -> datasets.Dataset:
            cols = list(rows[0])
            return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in cols})

        parts = {name: table(rows) for name, rows in (("ntuples", self.ntuples),
                                                      ("pairs", self.pairs)) if rows}  # fmt: skip
        if len(parts) == 1:
            return next(iter(parts.values()))
        return datasets.DatasetDict(parts)


def resolve_exports(source: str | Path) -> ExportsSource:
    """A run directory (its ``export_retrieval`` stage's folder and instruction, from the
    manifest) or an exports folder itself (instruction from FlagEmbedding's ``prompt``)."""
    root = Path(source)
    if (root / "manifest.json").is_file():
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        out, instruction = "exports", None
        for sc in manifest.get("config", {}).get("stages", []):
            if sc.get("stage") == "export_retrieval":
                params = sc.get("params") or {}
                out, instruction = params.get("out") or "exports", params.get("instruction")
        exports = root / out
        if not exports.is_dir():
            raise InputError(
                f"no exports folder '{out}': run the export_retrieval stage first", path=str(root)
            )
        return ExportsSource(exports, root, instruction or _flag_prompt(exports))
    if (root / "sentence_transformers").is_dir() or (root / "beir").is_dir():
        run_dir = root.parent if (root.parent / "manifest.json").is_file() else None
        return ExportsSource(root, run_dir, _flag_prompt(root))
    raise InputError(
        "neither a run directory (manifest.json) nor an exports folder "
        "(sentence_transformers/, beir/)",
        path=str(root),
    )


def _flag_prompt(exports: Path) -> str | None:
    path = exports / "flag_embedding" / "train.jsonl"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return json.loads(line).get("prompt") or None
    return None


def jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines file, streamed (none when it is absent)."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_training_data(
    exports: str | Path, hard_negatives: int | None = None, split: str = "train"
) -> TrainingData:
    """The ``split`` rows of the sentence-transformers export as n-tuples with
    ``hard_negatives`` negatives (None: the export's n-tuple width) plus pairs for the
    (query, positive) rows that have fewer.

    Raises:
        InputError: the export has no pairs file for ``split``.
    """
    st = Path(exports) / "sentence_transformers"
    pairs_path = st / "pairs" / f"{split}.jsonl"
    if not pairs_path.is_file():
        raise InputError(
            "no sentence-transformers export: run export_retrieval with the "
            "sentence_transformers format (and hard_negatives before it)",
            path=str(pairs_path),
        )
    negatives: dict[tuple[str, str], list[str]] = {}
    for row in jsonl_rows(st / "triplets" / f"{split}.jsonl"):
        bucket = negatives.setdefault((row["anchor"], row["positive"]), [])
        if row["negative"] not in bucket:
            bucket.append(row["negative"])
    available = max((len(v) for v in negatives.values()), default=0)
    first = next(jsonl_rows(st / "ntuples" / f"{split}.jsonl"), None)
    width = sum(1 for c in first if c.startswith("negative_")) if first else None
    wanted = hard_negatives if hard_negatives is not None else (width or available)
    k = min(wanted, available)
    data = TrainingData(negatives=k, available=available)
    seen: set[tuple[str, str]] = set()
    for row in jsonl_rows(pairs_path):
        key = (row["anchor"], row["positive"])
        if key in seen:
            continue
        seen.add(key)
        negs = negatives.get(key, [])
        if k and len(negs) >= k:
            tuple_row = {"anchor": key[0], "positive": key[1]}
            tuple_row.update({f"negative_{i + 1}": n for i, n in enumerate(negs[:k])})
            data.ntuples.append(tuple_row)
        else:
            data.pairs.append({"anchor": key[0], "positive": key[1]})
    return data
