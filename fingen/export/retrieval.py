"""Retrieval exports: BEIR (as the FinCPRG release), sentence-transformers, FlagEmbedding, HF.

BEIR layout::

    corpus.jsonl    {"_id", "title", "text"}          one row per passage
    queries.jsonl   {"_id", "text", "level"}          one row per query
    qrels/<name>.tsv  "query-id\\tcorpus-id\\tscore" with that header

Which labels go where (positives only: kind direct/judged/mined with score > 0; verified
negatives never appear in qrels):

=============================  ==============================================================
``sentence_level``             direct (+ judged) labels of sentence-level queries
``passage_level``              direct (+ judged) labels of passage-level queries
``topic_level``                judged (+ direct) labels of topic-level queries
``sentence_level_extended``    sentence_level + mined labels of sentence-level queries
``passage_level_extended``     passage_level + mined labels of passage-level queries
``all``                        sentence_level ∪ passage_level ∪ topic_level (no mined labels)
``topic_level_extended``       only written when topic queries were mined (not in FinCPRG)
=============================  ==============================================================

Scores are 1 (BEIR's binary convention) unless ``graded=True``, which writes the stored grade
(direct = 1, judged/mined = 1–2). Exporters never call a model: hard negatives come from the
``hard_negatives`` stage as ``HardNegatives`` records.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fingen.records import HardNegatives, Passage, Qrel, Query

if TYPE_CHECKING:
    import datasets

__all__ = [
    "BASE_FILES",
    "beir_dataset_dict",
    "beir_features",
    "beir_qrels",
    "flag_embedding_rows",
    "resolve_groups",
    "st_ntuples",
    "st_pairs",
    "st_triplets",
    "to_dataset",
    "write_beir",
    "write_jsonl",
]

BASE_FILES = (
    "all",
    "sentence_level",
    "passage_level",
    "topic_level",
    "sentence_level_extended",
    "passage_level_extended",
)
_POSITIVE = ("direct", "judged", "mined")
QrelRow = tuple[str, str, int]


def beir_qrels(
    queries: Iterable[Query], qrels: Iterable[Qrel], *, graded: bool = False
) -> dict[str, list[QrelRow]]:
    """Qrels rows per BEIR file name (see the module docstring for the rules)."""
    level = {q.query_id: q.level for q in queries}
    best: dict[tuple[str, str], tuple[int, bool]] = {}  # (qid, pid) -> (score, mined only)
    for r in qrels:
        if r.kind not in _POSITIVE or r.score <= 0 or r.query_id not in level:
            continue
        key = (r.query_id, r.passage_id)
        score, mined = best.get(key, (0, True))
        best[key] = (max(score, r.score), mined and r.kind == "mined")
    files: dict[str, list[QrelRow]] = {name: [] for name in BASE_FILES}
    files["topic_level_extended"] = []
    topic_mined = False
    for (qid, pid), (score, mined) in sorted(best.items()):
        row = (qid, pid, score if graded else 1)
        lvl = level[qid]
        files[f"{lvl}_level_extended"].append(row)
        topic_mined = topic_mined or (mined and lvl == "topic")
        if not mined:
            files[f"{lvl}_level"].append(row)
            files["all"].append(row)
    if not topic_mined:
        del files["topic_level_extended"]
    return files


def _atomic_dir(out_dir: Path) -> Path:
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _swap(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as UTF-8 JSON lines; returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_beir(
    out_dir: str | Path,
    passages: Iterable[Passage],
    queries: Sequence[Query],
    qrels: Iterable[Qrel],
    *,
    graded: bool = False,
) -> dict[str, int]:
    """Write a BEIR directory (replacing ``out_dir`` atomically); returns row counts per file.

    Labels of queries not in ``queries`` or passages not in ``passages`` are left out and
    counted under ``"dangling"``.
    """
    out = Path(out_dir)
    tmp = _atomic_dir(out)
    pids: set[str] = set()

    def corpus_rows() -> Iterator[dict[str, str]]:
        for p in passages:
            pids.add(p.passage_id)
            yield {"_id": p.passage_id, "title": p.title, "text": p.text}

    counts = {"corpus": write_jsonl(tmp / "corpus.jsonl", corpus_rows())}
    counts["queries"] = write_jsonl(
        tmp / "queries.jsonl",
        ({"_id": q.query_id, "text": q.text, "level": q.level} for q in queries),
    )
    (tmp / "qrels").mkdir()
    labels = list(qrels)
    kept = [r for r in labels if r.passage_id in pids]
    qids = {q.query_id for q in queries}
    counts["dangling"] = sum(
        1
        for r in labels
        if r.kind != "negative" and (r.passage_id not in pids or r.query_id not in qids)
    )
    for name, rows in beir_qrels(queries, kept, graded=graded).items():
        with (tmp / "qrels" / f"{name}.tsv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(["query-id", "corpus-id", "score"])
            writer.writerows(rows)
        counts[f"qrels/{name}"] = len(rows)
    _swap(tmp, out)
    return counts


# --- training views -------------------------------------------------------------------------


def resolve_groups(
    groups: Iterable[HardNegatives], queries: Mapping[str, Query], passages: Mapping[str, Passage]
) -> Iterator[dict[str, Any]]:
    """``{"query", "pos": [text], "neg": [text]}`` per group whose query and passages exist."""
    for g in groups:
        q = queries.get(g.query_id)
        pos = [passages[p].text for p in g.positive_ids if p in passages]
        if q is None or not pos:
            continue
        neg = [passages[p].text for p in g.negative_ids if p in passages]
        yield {"query_id": g.query_id, "query": q.text, "pos": pos, "neg": neg}


def st_pairs(resolved: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, str]]:
    """(anchor, positive) rows: one per positive (for in-batch negatives losses)."""
    for g in resolved:
        for p in g["pos"]:
            yield {"anchor": g["query"], "positive": p}


def st_triplets(resolved: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, str]]:
    """(anchor, positive, negative) rows: positives x negatives, as ``mine_hard_negatives``."""
    for g in resolved:
        for p in g["pos"]:
            for n in g["neg"]:
                yield {"anchor": g["query"], "positive": p, "negative": n}


def st_ntuples(resolved: Iterable[Mapping[str, Any]], k: int) -> Iterator[dict[str, str]]:
    """(anchor, positive, negative_1..negative_k) rows; groups with fewer than k negatives
    are skipped (count them with ``sum(len(g["neg"]) < k ...)``)."""
    for g in resolved:
        if len(g["neg"]) < k:
            continue
        for p in g["pos"]:
            row = {"anchor": g["query"], "positive": p}
            row.update({f"negative_{i + 1}": n for i, n in enumerate(g["neg"][:k])})
            yield row


def flag_embedding_rows(
    resolved: Iterable[Mapping[str, Any]], *, instruction: str | None = None
) -> Iterator[dict[str, Any]]:
    """FlagEmbedding fine-tuning rows ``{query, pos, neg}`` (+ ``prompt`` with an instruction)."""
    for g in resolved:
        row: dict[str, Any] = {"query": g["query"], "pos": list(g["pos"]), "neg": list(g["neg"])}
        if instruction:
            row["prompt"] = instruction
        yield row


def to_dataset(rows: Iterable[Mapping[str, Any]]) -> datasets.Dataset:
    """Rows as a ``datasets.Dataset`` with string columns (ST trainers take it as is)."""
    import datasets

    rows = list(rows)
    cols = list(rows[0]) if rows else ["anchor", "positive"]
    features = datasets.Features({c: datasets.Value("string") for c in cols})
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in cols}, features=features)


def beir_features() -> dict[str, datasets.Features]:
    """Explicit Features of the corpus, queries and qrels tables."""
    import datasets

    s = datasets.Value("string")
    return {
        "corpus": datasets.Features({"_id": s, "title": s, "text": s}),
        "queries": datasets.Features({"_id": s, "text": s, "level": s}),
        "qrels": datasets.Features(
            {"query-id": s, "corpus-id": s, "score": datasets.Value("int32"), "kind": s}
        ),
    }


def beir_dataset_dict(
    passages: Iterable[Passage], queries: Iterable[Query], qrels: Iterable[Qrel]
) -> datasets.DatasetDict:
    """A ``DatasetDict`` with ``corpus``, ``queries`` and ``qrels`` tables (positive labels of
    every kind, with a ``kind`` column: direct/judged/mined)."""
    import datasets

    feats = beir_features()
    ps, qs = list(passages), list(queries)
    qids, pids = {q.query_id for q in qs}, {p.passage_id for p in ps}
    rs = [
        r
        for r in qrels
        if r.kind in _POSITIVE and r.score > 0 and r.query_id in qids and r.passage_id in pids
    ]
    tables = {
        "corpus": {
            "_id": [p.passage_id for p in ps],
            "title": [p.title for p in ps],
            "text": [p.text for p in ps],
        },
        "queries": {
            "_id": [q.query_id for q in qs],
            "text": [q.text for q in qs],
            "level": [q.level for q in qs],
        },
        "qrels": {
            "query-id": [r.query_id for r in rs],
            "corpus-id": [r.passage_id for r in rs],
            "score": [r.score for r in rs],
            "kind": [r.kind for r in rs],
        },
    }
    return datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(t, features=feats[name]) for name, t in tables.items()}
    )
