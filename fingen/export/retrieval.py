"""Retrieval exports: BEIR (as the FinCPRG release), sentence-transformers, FlagEmbedding, HF.

BEIR layout::

    corpus.jsonl      {"_id", "title", "text"}                one row per passage
    queries.jsonl     {"_id", "text", "level", "split"}       one row per query
    qrels/<name>.tsv  "query-id\\tcorpus-id\\tscore" with that header: the positives, score 1
    qrels/<name>_graded.tsv  the same labels with their 0-2 grade, verified negatives (0) too

``<name>`` is every file of ``fingen.labels.label_files``: the levels, their ``_extended``
versions (with mined labels), ``all``, and the splits (``train``, ``dev``, ``test``; a split
without labels gets no file) so ``GenericDataLoader(folder).load(split="dev")`` works. What
is a positive is decided by one ``RelevanceRule`` (``relevance.min_positive``). Training
views (sentence-transformers, FlagEmbedding) are written per split and never use a passage of
another split's documents. Exporters never call a model: hard negatives come from the
``hard_negatives`` stage.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fingen.labels import LEVEL_FILES, RelevanceRule, label_files
from fingen.records import HardNegatives, Passage, Qrel, Query

if TYPE_CHECKING:
    import datasets

__all__ = [
    "BASE_FILES",
    "beir_dataset_dict",
    "beir_features",
    "beir_qrels",
    "flag_embedding_rows",
    "ntuple_width",
    "resolve_groups",
    "st_ntuples",
    "st_pairs",
    "st_triplets",
    "to_dataset",
    "write_beir",
    "write_jsonl",
]

BASE_FILES = LEVEL_FILES
QrelRow = tuple[str, str, int]


def beir_qrels(
    queries: Iterable[Query],
    qrels: Iterable[Qrel],
    *,
    rule: RelevanceRule | None = None,
    splits: Mapping[str, str] | None = None,
    graded: bool = False,
) -> dict[str, list[QrelRow]]:
    """Rows per qrels file name: the positives with score 1, or (``graded``) every label
    with its grade (see ``fingen.labels``)."""
    rule = rule or RelevanceRule()
    out: dict[str, list[QrelRow]] = {}
    for name, labels in label_files(queries, qrels, splits=splits).items():
        if graded:
            out[name] = [(r.query_id, r.passage_id, r.score) for r in labels]
        else:
            out[name] = [(r.query_id, r.passage_id, 1) for r in labels if rule.is_positive(r)]
    return out


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


def _write_tsv(path: Path, rows: list[QrelRow]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["query-id", "corpus-id", "score"])
        writer.writerows(rows)


def write_beir(
    out_dir: str | Path,
    passages: Iterable[Passage],
    queries: Sequence[Query],
    qrels: Iterable[Qrel],
    *,
    rule: RelevanceRule | None = None,
    splits: Mapping[str, str] | None = None,
    split_names: Sequence[str] = (),
) -> dict[str, int]:
    """Write a BEIR directory (replacing ``out_dir`` atomically); returns row counts per file.

    ``splits`` maps query ids to split names; every name in ``split_names`` is counted even
    when empty, but a split's qrels file is written only when it has rows: beir's
    ``GenericDataLoader.load(split=...)`` fails on a header-only file (``IndexError``), and
    on a missing one says the file is not present. Level files are always written. Labels of
    unknown queries or passages are left out and counted under ``"dangling"``.
    """
    out = Path(out_dir)
    tmp = _atomic_dir(out)
    pids: set[str] = set()

    def corpus_rows() -> Iterator[dict[str, str]]:
        for p in passages:
            pids.add(p.passage_id)
            yield {"_id": p.passage_id, "title": p.title or "", "text": p.text}

    counts = {"corpus": write_jsonl(tmp / "corpus.jsonl", corpus_rows())}
    split_of = dict(splits or {})
    counts["queries"] = write_jsonl(
        tmp / "queries.jsonl",
        (
            {"_id": q.query_id, "text": q.text, "level": q.level,
             "split": split_of.get(q.query_id, "train")}
            for q in queries
        ),
    )  # fmt: skip
    (tmp / "qrels").mkdir()
    labels = list(qrels)
    qids = {q.query_id for q in queries}
    kept = [r for r in labels if r.passage_id in pids and r.query_id in qids]
    counts["dangling"] = len(labels) - len(kept)
    binary = beir_qrels(queries, kept, rule=rule, splits=splits)
    graded = beir_qrels(queries, kept, rule=rule, splits=splits, graded=True)
    split_files = {*split_names, *(splits or {}).values()}
    for name in [*split_names, *binary]:
        for file, rows in ((name, binary.get(name, [])), (f"{name}_graded", graded.get(name, []))):
            if rows or name not in split_files:
                _write_tsv(tmp / "qrels" / f"{file}.tsv", rows)
        counts[f"qrels/{name}"] = len(binary.get(name, []))
    _swap(tmp, out)
    return counts


# --- training views -------------------------------------------------------------------------


def resolve_groups(
    groups: Iterable[HardNegatives],
    queries: Mapping[str, Query],
    passages: Mapping[str, Passage],
    *,
    query_split: Mapping[str, str] | None = None,
    doc_split: Mapping[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """``{"query_id", "query", "split", "pos", "neg", "pos_scores", "neg_scores"}`` per group
    whose query and positives exist. With splits, a group keeps only passages of its own
    split's documents (no passage text crosses splits)."""
    for g in groups:
        q = queries.get(g.query_id)
        if q is None:
            continue
        split = (query_split or {}).get(g.query_id, "train")

        def usable(pid: str, split: str = split) -> bool:
            p = passages.get(pid)
            return p is not None and (doc_split is None or doc_split.get(p.doc_id) == split)

        pos_scores = g.positive_scores or [0.0] * len(g.positive_ids)
        pos = [(p, s) for p, s in zip(g.positive_ids, pos_scores, strict=False) if usable(p)]
        if not pos:
            continue
        neg = [(p, s) for p, s in zip(g.negative_ids, g.scores or [0.0] * len(g.negative_ids),
                                      strict=False) if usable(p)]  # fmt: skip
        yield {
            "query_id": g.query_id,
            "query": q.text,
            "split": split,
            "pos": [passages[p].text for p, _ in pos],
            "pos_scores": [s for _, s in pos],
            "neg": [passages[p].text for p, _ in neg],
            "neg_scores": [s for _, s in neg],
        }


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


def ntuple_width(resolved: Sequence[Mapping[str, Any]], requested: int | None) -> int:
    """Negatives per n-tuple row: ``requested``, capped at the most any group has (so the
    file is never empty while groups have negatives); 0 when no group has one."""
    most = max((len(g["neg"]) for g in resolved), default=0)
    return most if requested is None else min(requested, most)


def st_ntuples(resolved: Iterable[Mapping[str, Any]], k: int) -> Iterator[dict[str, str]]:
    """(anchor, positive, negative_1..negative_k) rows; groups with fewer than k negatives
    are skipped (count them with ``sum(len(g["neg"]) < k ...)``)."""
    if k < 1:
        return
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
    """FlagEmbedding fine-tuning rows ``{query, pos, neg, pos_scores, neg_scores}`` (+
    ``prompt`` on every row when an instruction is set). Scores are the mining embedder's
    cosine similarities (one scale for positives and negatives), the teacher scores of
    FlagEmbedding's distillation mode."""
    for g in resolved:
        row: dict[str, Any] = {
            "query": g["query"],
            "pos": list(g["pos"]),
            "neg": list(g["neg"]),
            "pos_scores": list(g.get("pos_scores", [])),
            "neg_scores": list(g.get("neg_scores", [])),
        }
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
        "queries": datasets.Features({"_id": s, "text": s, "level": s, "split": s}),
        "qrels": datasets.Features(
            {"query-id": s, "corpus-id": s, "score": datasets.Value("int32"), "kind": s}
        ),
    }


def beir_dataset_dict(
    passages: Iterable[Passage],
    queries: Iterable[Query],
    qrels: Iterable[Qrel],
    *,
    splits: Mapping[str, str] | None = None,
) -> datasets.DatasetDict:
    """A ``DatasetDict`` with ``corpus``, ``queries`` (with their split) and ``qrels`` (every
    label with its 0-2 grade and ``kind``: direct/judged/mined) tables."""
    import datasets

    feats = beir_features()
    ps, qs = list(passages), list(queries)
    qids, pids = {q.query_id for q in qs}, {p.passage_id for p in ps}
    rs = [r for r in qrels if r.query_id in qids and r.passage_id in pids]
    split_of = dict(splits or {})
    tables = {
        "corpus": {
            "_id": [p.passage_id for p in ps],
            "title": [p.title or "" for p in ps],
            "text": [p.text for p in ps],
        },
        "queries": {
            "_id": [q.query_id for q in qs],
            "text": [q.text for q in qs],
            "level": [q.level for q in qs],
            "split": [split_of.get(q.query_id, "train") for q in qs],
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
