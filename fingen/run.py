"""The one reader of a run directory: what its stage files amount to, as typed records.

Every stage output has a record kind (``fingen.records.KINDS``) and a mode, declared by the
stage and recorded in ``manifest.json`` (``stages[key].kinds``, ``stages[key].replaces``):

- ``merge`` (the default): the kind's files are read in stage order and merged; a later
  record with the same key (e.g. a titled version of a document) replaces the earlier one,
  in the earlier one's place.
- ``replace``: the file replaces everything of its kind before it (a ``filter`` stage's kept
  queries and their labels).
- outputs not listed (failures, intermediate rounds) are not data.

``RunView`` answers "the run's records of a kind" for a whole run (export, hub, card,
report, audit) or for the stages before one (a stage's default inputs, see
``fingen.stages.base``). ``load_run`` gives the final dataset as plain collections.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fingen.errors import InputError, StoreError
from fingen.files import iter_jsonl
from fingen.labels import RelevanceRule
from fingen.records import (
    KINDS,
    CoTSample,
    Document,
    DPORecord,
    HardNegatives,
    Passage,
    QAItem,
    Qrel,
    Query,
    RLRecord,
    SFTRecord,
    TopicCluster,
    record_key,
)

__all__ = ["LEVELS", "OutputFile", "RunData", "RunView", "load_run", "read_manifest"]

LEVELS = ("sentence", "passage", "topic")


@dataclass(frozen=True)
class OutputFile:
    """One stage output: ``<stage>[.<output>].jsonl`` holding records of ``kind``."""

    stage: str
    stage_type: str
    output: str
    kind: str
    mode: str = "merge"  # merge | replace
    root: Path = Path(".")

    @property
    def path(self) -> Path:
        name = f"{self.stage}.{self.output}.jsonl" if self.output else f"{self.stage}.jsonl"
        return self.root / name

    @property
    def ref(self) -> str:
        return f"{self.stage}.{self.output}" if self.output else self.stage


def read_manifest(root: Path) -> dict[str, Any]:
    """``root/manifest.json`` ({} when absent).

    Raises:
        StoreError: the manifest is not JSON.
    """
    path = root / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StoreError(f"corrupt manifest {path}: {exc}") from None


def _manifest_files(root: Path, manifest: dict[str, Any]) -> list[OutputFile]:
    files = []
    for key, entry in manifest.get("stages", {}).items():
        replaces = set(entry.get("replaces", []))
        for output, kind in entry.get("kinds", {}).items():
            name = "" if output == "main" else output
            mode = "replace" if output in replaces else "merge"
            files.append(OutputFile(key, str(entry.get("stage", key)), name, kind, mode, root))
    return files


class RunView:
    """The records of a run, merged by kind (see the module doc)."""

    def __init__(self, root: Path, files: Sequence[OutputFile]) -> None:
        self.root = root
        self.files = [f for f in files if f.path.is_file()]

    @classmethod
    def open(cls, root: str | Path) -> RunView:
        """The view of a finished (or partial) run, from its manifest."""
        path = Path(root)
        if not path.is_dir():
            raise InputError("not a run directory", path=str(path))
        return cls(path, _manifest_files(path, read_manifest(path)))

    def files_of(self, kind: str) -> list[OutputFile]:
        """The files that make up the run's view of ``kind`` (after the last replace)."""
        chosen: list[OutputFile] = []
        for f in self.files:
            if f.kind == kind:
                chosen = [f] if f.mode == "replace" else [*chosen, f]
        return chosen

    def produces(self, kind: str) -> bool:
        return bool(self.files_of(kind))

    def records(self, kind: str) -> Iterator[Any]:
        """The kind's records (pydantic records, or dicts for plain kinds), merged."""
        return self.read_files(self.files_of(kind), kind)

    def read_files(self, files: Sequence[OutputFile], kind: str) -> Iterator[Any]:
        model = KINDS[kind][0]
        if len(files) <= 1 or KINDS[kind][1] is None:
            for f in files:
                yield from iter_jsonl(f.path, model)
            return
        merged: dict[Any, Any] = {}
        for f in files:
            for rec in iter_jsonl(f.path, model):
                merged[record_key(kind, rec)] = rec
        yield from merged.values()

    def read_refs(self, refs: Sequence[str], kind: str) -> Iterator[Any]:
        """Records of explicitly named outputs (``stage`` or ``stage.output``), merged."""
        by_ref = {f.ref: f for f in self.files}
        files = []
        for ref in refs:
            f = by_ref.get(ref)
            if f is None:
                stage, _, output = ref.partition(".")
                f = OutputFile(stage, stage, output, kind, root=self.root)
                if not f.path.is_file():
                    raise StoreError(
                        f"no output '{f.path.name}' in {self.root}: run '{stage}' first"
                    )
            files.append(f)
        return self.read_files(files, kind)


@dataclass
class RunData:
    """The final records of a run (passages and documents are streamed on demand)."""

    view: RunView
    manifest: dict[str, Any]
    queries: dict[str, Query] = field(default_factory=dict)
    qrels: list[Qrel] = field(default_factory=list)  # every label, grades 0-2
    rule: RelevanceRule = field(default_factory=RelevanceRule)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    hard_negatives: list[HardNegatives] = field(default_factory=list)
    qa: dict[str, QAItem] = field(default_factory=dict)
    cot: dict[str, CoTSample] = field(default_factory=dict)
    sft: list[SFTRecord] = field(default_factory=list)
    dpo: list[DPORecord] = field(default_factory=list)
    rl: list[RLRecord] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.view.root

    @property
    def files(self) -> list[OutputFile]:
        """The run's data files, in stage order."""
        return self.view.files

    def passages(self, ids: set[str] | None = None) -> Iterator[Passage]:
        """The corpus (optionally only ``ids``)."""
        return (p for p in self.view.records("passage") if ids is None or p.passage_id in ids)

    def documents(self, ids: set[str] | None = None) -> Iterator[Document]:
        return (d for d in self.view.records("document") if ids is None or d.doc_id in ids)

    @property
    def positives(self) -> list[Qrel]:
        """Labels at or above the run's ``relevance.min_positive``."""
        return [q for q in self.qrels if self.rule.is_positive(q)]

    @property
    def negatives(self) -> list[Qrel]:
        """Verified negatives: judged or mined labels of grade 0."""
        return [q for q in self.qrels if self.rule.is_negative(q)]

    @property
    def partial(self) -> list[Qrel]:
        """Labels between 0 and the positive threshold: neither positive nor negative."""
        return [q for q in self.qrels if 0 < q.score < self.rule.min_positive]


def _cluster_row(c: TopicCluster) -> dict[str, Any]:
    return {"id": c.cluster_id, "industry": c.industry, "period": c.period, "words": c.words,
            "doc_ids": c.doc_ids, "titles": c.titles}  # fmt: skip


def load_run(run_dir: str | Path) -> RunData:
    """The final dataset of a run: labels restricted to the run's final queries.

    Raises:
        InputError: ``run_dir`` is not a directory.
        StoreError: the manifest or a stage file is corrupt.
    """
    view = RunView.open(run_dir)
    manifest = read_manifest(view.root)
    min_positive = manifest.get("config", {}).get("relevance", {}).get("min_positive", 2)
    data = RunData(view, manifest, rule=RelevanceRule(min_positive))
    data.queries = {q.query_id: q for q in view.records("query")}
    keep = data.queries.keys()
    data.qrels = [r for r in view.records("qrel") if not keep or r.query_id in keep]
    data.clusters = [_cluster_row(c) for c in view.records("cluster")]
    data.hard_negatives = list(view.records("hard_negatives"))
    data.qa = {q.qa_id: q for q in view.records("qa")}
    data.cot = {s.sample_id: s for s in view.records("cot")}
    data.sft, data.dpo, data.rl = (list(view.records(k)) for k in ("sft", "dpo", "rl"))
    data.evaluation = list(view.records("evaluation"))
    return data
