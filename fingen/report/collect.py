"""Read a run directory into typed data (``load_run``) and a report summary (``summarize``).

Stage files are found through the manifest (``stages[key].stage`` is the stage type, the key
is the file prefix) and, for files the manifest does not list, by their prefix. What a file
holds is decided by the shape of its first row (an empty file by its stage type and output
name), so renamed stages and missing ones are fine.

The *final* dataset: records of the same kind are merged in stage order (a later stage's
version of an id wins); a ``filter`` stage's queries, qrels or partial labels replace what
came before it; qrels are restricted to the kept queries. ``partial`` outputs (graded below
the positive threshold) are kept apart; ``failures``, ``rejected``/``dropped`` and
``round<i>`` (intermediate annotation rounds) outputs are not data.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from fingen.errors import InputError, StoreError
from fingen.files import iter_jsonl
from fingen.records import (
    CoTSample,
    Document,
    DPORecord,
    Passage,
    QAItem,
    Qrel,
    Query,
    RLRecord,
    SFTRecord,
)

__all__ = [
    "LEVELS",
    "LevelStats",
    "RunData",
    "RunSummary",
    "SourceRate",
    "StageFile",
    "classify",
    "discover",
    "load_run",
    "summarize",
]

R = TypeVar("R", bound=BaseModel)
LEVELS = ("sentence", "passage", "topic")
_STAGE_ORDER = (
    "ingest chunk bottom_up titles topics top_down mine filter hard_negatives export_retrieval "
    "evaluate qa_source synthesize distill verify judge_reasoning route preference annotate "
    "export_training report"
)
_ORDER = _STAGE_ORDER.split()
_NOT_DATA = re.compile(r"fail|reject|drop|remov|^round\d+$")
_USAGE_KEYS = ("requests", "cached", "prompt_tokens", "completion_tokens", "cost")
_SHAPES = (
    ("sft", {"messages"}),
    ("dpo", {"prompt", "chosen", "rejected"}),
    ("rl", {"prompt", "answer"}),
    ("cot", {"sample_id", "qa_id"}),
    ("qa", {"qa_id", "question", "gold_answer"}),
    ("failure", {"stage", "item_id", "reason"}),
    ("qrel", {"query_id", "passage_id"}),
    ("query", {"query_id", "text", "level"}),
    ("cluster", {"doc_ids", "titles"}),
    ("passage", {"passage_id", "doc_id", "text"}),
    ("document", {"doc_id", "text"}),
    ("evaluation", {"retriever", "qrels"}),
)
_BY_OUTPUT = {"queries": "query", "qrels": "qrel", "negatives": "qrel", "clusters": "cluster"}
_BY_STAGE = {"ingest": "document", "chunk": "passage", "titles": "document", "topics": "document",
             "filter": "query", "mine": "qrel", "qa_source": "qa", "synthesize": "qa",
             "distill": "cot", "verify": "cot", "judge_reasoning": "cot", "preference": "dpo"}  # fmt: skip
_KINDS = {kind for kind, _ in _SHAPES} | {"partial"}
_MODELS: dict[str, type[BaseModel]] = {"sft": SFTRecord, "dpo": DPORecord, "rl": RLRecord}


def classify(row: dict[str, Any]) -> str | None:
    """The record kind of a JSON row by its keys (``None`` when unknown)."""
    return next((kind for kind, keys in _SHAPES if keys <= row.keys()), None)


@dataclass(frozen=True)
class StageFile:
    """One ``<key>[.<output>].jsonl`` file: its stage key and type, and the kind of rows."""

    key: str
    stage: str
    output: str
    path: Path
    kind: str


def _kind_of(path: Path, stage: str, output: str) -> str | None:
    with path.open(encoding="utf-8") as f:
        line = next((ln for ln in f if ln.strip()), None)
    if line is None:  # an empty output still counts (e.g. a filter that kept nothing)
        kind = _BY_OUTPUT.get(output) or (output if output else _BY_STAGE.get(stage))
    else:
        try:
            row = json.loads(line)
        except ValueError:
            return None
        kind = classify(row) if isinstance(row, dict) else None
    kind = "partial" if kind == "qrel" and "partial" in output else kind
    return kind if kind in _KINDS else None


def discover(root: Path, manifest: dict[str, Any]) -> list[StageFile]:
    """Data files of the run in stage order (manifest order, then the usual stage order)."""
    stages = manifest.get("stages", {})
    keys = list(stages)

    def rank(f: StageFile) -> tuple[int, int, str, str]:
        if f.key in stages:
            return (0, keys.index(f.key), f.key, f.output)
        return (1, _ORDER.index(f.stage) if f.stage in _ORDER else 99, f.key, f.output)

    found = []
    for path in root.glob("*.jsonl"):
        key, _, output = path.name.removesuffix(".jsonl").partition(".")
        stage = str(stages.get(key, {}).get("stage", key))
        if not _NOT_DATA.search(output) and (kind := _kind_of(path, stage, output)):
            found.append(StageFile(key, stage, output, path, kind))
    return sorted(found, key=rank)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


@dataclass
class RunData:
    """The final records of a run (see the module doc); passages/documents are streamed."""

    root: Path
    manifest: dict[str, Any]
    files: list[StageFile]
    queries: dict[str, Query] = field(default_factory=dict)
    qrels: list[Qrel] = field(default_factory=list)
    partial: list[Qrel] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    qa: dict[str, QAItem] = field(default_factory=dict)
    cot: dict[str, CoTSample] = field(default_factory=dict)
    sft: list[SFTRecord] = field(default_factory=list)
    dpo: list[DPORecord] = field(default_factory=list)
    rl: list[RLRecord] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)

    def _latest(self, kind: str, model: type[R], id_of: str, ids: set[str] | None) -> Iterator[R]:
        seen: set[str] = set()
        for f in reversed([f for f in self.files if f.kind == kind]):  # a later version wins
            for rec in iter_jsonl(f.path, model):
                rid = getattr(rec, id_of)
                if rid not in seen and (ids is None or rid in ids):
                    seen.add(rid)
                    yield rec

    def passages(self, ids: set[str] | None = None) -> Iterator[Passage]:
        """The corpus (optionally only ``ids``), one record per passage id."""
        return self._latest("passage", Passage, "passage_id", ids)

    def documents(self, ids: set[str] | None = None) -> Iterator[Document]:
        return self._latest("document", Document, "doc_id", ids)

    @property
    def positives(self) -> list[Qrel]:
        return [q for q in self.qrels if q.score > 0 and q.kind != "negative"]

    @property
    def negatives(self) -> list[Qrel]:
        return [q for q in self.qrels if q.score <= 0 or q.kind == "negative"]


def _unique(rows: list[R]) -> list[R]:
    return list({r.model_dump_json(): r for r in rows}.values())


def _cluster(row: dict[str, Any]) -> dict[str, Any]:
    def strings(*names: str) -> list[str]:
        return [str(v) for v in next((row[n] for n in names if n in row), [])]

    return {
        "id": str(row.get("cluster_id", row.get("id", ""))),
        "industry": str(row.get("industry", "")),
        "period": str(row.get("period", row.get("time", ""))),
        "words": strings("words", "topic_words"),
        "doc_ids": strings("doc_ids"),
        "titles": strings("titles"),
    }


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory's final records (see the module doc).

    Raises:
        InputError: ``run_dir`` is not a directory.
        StoreError: the manifest or a stage file is corrupt.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError("not a run directory", path=str(root))
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text("utf-8")) if manifest_path.is_file() else {}
    except ValueError as exc:
        raise StoreError(f"corrupt manifest {manifest_path}: {exc}") from None
    data = RunData(root, manifest, discover(root, manifest))
    labels: dict[str, dict[Any, Any]] = {"query": {}, "qrel": {}, "partial": {}}
    reset: set[tuple[str, str]] = set()
    for f in data.files:
        if f.kind in labels and f.stage.startswith("filter") and (f.key, f.kind) not in reset:
            reset.add((f.key, f.kind))
            labels[f.kind].clear()
        if f.kind == "query":
            labels["query"].update((q.query_id, q) for q in iter_jsonl(f.path, Query))
        elif f.kind in ("qrel", "partial"):
            labels[f.kind].update(((r.query_id, r.passage_id), r) for r in iter_jsonl(f.path, Qrel))
        elif f.kind == "cluster":
            data.clusters.extend(_cluster(row) for row in _rows(f.path))
        elif f.kind == "evaluation":
            data.evaluation.extend(_rows(f.path))
        elif f.kind == "qa":
            data.qa.update((q.qa_id, q) for q in iter_jsonl(f.path, QAItem))
        elif f.kind == "cot":
            data.cot.update((s.sample_id, s) for s in iter_jsonl(f.path, CoTSample))
        elif f.kind in _MODELS:
            getattr(data, f.kind).extend(iter_jsonl(f.path, _MODELS[f.kind]))
    data.queries = labels["query"]
    keep = data.queries.keys()
    data.qrels = [r for r in labels["qrel"].values() if not keep or r.query_id in keep]
    data.partial = [r for r in labels["partial"].values() if not keep or r.query_id in keep]
    data.sft, data.dpo, data.rl = _unique(data.sft), _unique(data.dpo), _unique(data.rl)
    return data


# -- the report summary ------------------------------------------------------------------------
@dataclass
class LevelStats:
    queries: int = 0
    lengths: list[int] = field(default_factory=list)
    positives_per_query: list[int] = field(default_factory=list)
    origins: Counter[str] = field(default_factory=Counter)


@dataclass
class SourceRate:
    """CoT samples of one QA source and how many passed round 1 (correct) and round 2."""

    items: int = 0
    samples: int = 0
    correct: int = 0
    quality: int = 0
    passed: int = 0


@dataclass
class RunSummary:
    data: RunData
    totals: dict[str, Any]
    counts: dict[str, int]
    levels: dict[str, LevelStats]
    judge_scores: dict[str, Counter[int]]
    cot_sources: dict[str, SourceRate]

    @property
    def manifest(self) -> dict[str, Any]:
        return self.data.manifest

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data.manifest.get("stages", {})


def _totals(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = dict.fromkeys((*_USAGE_KEYS, "failed", "rejected_rows"), 0)
    for e in stages.values():
        for k in _USAGE_KEYS:
            totals[k] += e.get("usage", {}).get(k, 0)
        totals["failed"] += e.get("failed", 0)
        totals["rejected_rows"] += e.get("rejected_rows", 0)
    totals["cost"] = round(totals["cost"], 6)
    return totals


def _level_stats(data: RunData) -> dict[str, LevelStats]:
    per_query: Counter[str] = Counter()
    levels = {lv: LevelStats() for lv in LEVELS}
    for r in data.positives:
        per_query[r.query_id] += 1
        if q := data.queries.get(r.query_id):
            levels.setdefault(q.level, LevelStats()).origins[r.kind] += 1
    for q in data.queries.values():
        st = levels.setdefault(q.level, LevelStats())
        st.queries += 1
        st.lengths.append(len(q.text))
        st.positives_per_query.append(per_query[q.query_id])
    return levels


def _cot_rates(data: RunData) -> dict[str, SourceRate]:
    rates: dict[str, SourceRate] = defaultdict(SourceRate)
    items: set[str] = set()
    for s in data.cot.values():
        item = data.qa.get(s.qa_id)
        rate = rates[(item.source if item else "") or "unknown"]
        rate.items += s.qa_id not in items
        items.add(s.qa_id)
        rate.samples += 1
        rate.correct += s.correct is True
        rate.quality += s.quality is True
        rate.passed += s.correct is True and s.quality is True and s.finish_reason != "length"
    return dict(rates)


def summarize(run_dir: str | Path) -> RunSummary:
    """Everything the report shows, read from ``run_dir``."""
    data = load_run(run_dir)
    judge_scores: dict[str, Counter[int]] = defaultdict(Counter)
    for r in data.qrels + data.partial:
        if r.kind != "direct":
            judge_scores[f"{r.kind} · {r.judge or 'unknown judge'}"][r.score] += 1
    counts = {
        "documents": sum(1 for _ in data.documents()),
        "passages": sum(1 for _ in data.passages()),
        "queries": len(data.queries),
        "qrels": len(data.positives),
        "negatives": len(data.negatives),
        "partial": len(data.partial),
        "clusters": len(data.clusters),
        "qa_items": len(data.qa),
        "cot_samples": len(data.cot),
        "sft": len(data.sft),
        "dpo": len(data.dpo),
        "rl": len(data.rl),
    }
    return RunSummary(
        data=data,
        totals=data.manifest.get("totals") or _totals(data.manifest.get("stages", {})),
        counts=counts,
        levels=_level_stats(data),
        judge_scores=dict(judge_scores),
        cot_sources=_cot_rates(data),
    )
