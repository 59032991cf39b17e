"""Retrieval evaluation on a BEIR directory: nDCG@10, Recall@10/100 and MRR@10 per qrels file.

Conventions (those of trec_eval / pytrec_eval, so numbers compare with BEIR and MTEB):

- nDCG gain is the graded label itself (linear: ``rel``, not ``2**rel - 1``), discount
  ``1 / log2(rank + 1)`` with ranks from 1; the ideal ranking sorts all labels of the query.
- A passage is relevant when its label is > 0 (recall, MRR).
- Only queries with at least one relevant passage in a qrels file count for that file; a
  query the retriever returns nothing for scores 0. Scores are means over those queries.

Retrievers: BM25 (``bm25s``; jieba words for Chinese) and any embedder ``load_embedder`` knows.
Corpus text is ``title + " " + text`` as in BEIR's dense search.

>>> report = evaluate_beir("run/exports/beir", models=["minilm"], bm25=True)  # doctest: +SKIP
>>> print_report(report)                                                     # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fingen.errors import InputError

if TYPE_CHECKING:
    from rich.table import Table

    from fingen.embed.base import Embedder

__all__ = [
    "METRICS",
    "bm25_rankings",
    "dense_rankings",
    "evaluate_beir",
    "evaluate_rankings",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "print_report",
    "recall_at_k",
    "report_table",
]

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
Qrels = Mapping[str, Mapping[str, int]]
Rankings = Mapping[str, Sequence[str]]


def ndcg_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain (trec_eval's ``ndcg_cut``); 0.0 when nothing is relevant."""
    dcg = sum(rels.get(pid, 0) / math.log2(r + 2) for r, pid in enumerate(ranking[:k]))
    ideal = sorted((v for v in rels.values() if v > 0), reverse=True)[:k]
    idcg = sum(v / math.log2(r + 2) for r, v in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """Relevant passages in the top k / all relevant passages."""
    relevant = {pid for pid, v in rels.items() if v > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """1 / rank of the first relevant passage within the top k, else 0."""
    for r, pid in enumerate(ranking[:k]):
        if rels.get(pid, 0) > 0:
            return 1.0 / (r + 1)
    return 0.0


def evaluate_rankings(rankings: Rankings, qrels: Qrels) -> dict[str, float]:
    """Mean of ``METRICS`` over the queries of ``qrels`` that have a relevant passage."""
    funcs = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}
    judged = [qid for qid, rels in qrels.items() if any(v > 0 for v in rels.values())]
    out: dict[str, float] = {}
    for metric in METRICS:
        name, k = metric.split("@")
        values = [funcs[name](rankings.get(qid, ()), qrels[qid], int(k)) for qid in judged]
        out[metric] = round(sum(values) / len(values), 5) if values else 0.0
    out["queries"] = len(judged)
    return out


def load_beir(
    beir_dir: str | Path,
) -> tuple[
    dict[str, dict[str, str]], dict[str, dict[str, str]], dict[str, dict[str, dict[str, int]]]
]:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and every ``qrels/*.tsv`` (name -> qrels)."""
    root = Path(beir_dir)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels"):
        if not (root / name).exists():
            raise InputError(f"not a BEIR directory: {name} is missing", path=str(root))
    corpus = {r["_id"]: r for r in _jsonl(root / "corpus.jsonl")}
    queries = {r["_id"]: r for r in _jsonl(root / "queries.jsonl")}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for path in sorted((root / "qrels").glob("*.tsv")):
        table: dict[str, dict[str, int]] = {}
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                table.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
        qrels[path.stem] = table
    if "all" in qrels:
        qrels = {"all": qrels.pop("all"), **qrels}
    return corpus, queries, qrels


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _doc_text(doc: Mapping[str, str]) -> str:
    title, text = doc.get("title") or "", doc.get("text") or ""
    return f"{title} {text}".strip()


def bm25_rankings(
    corpus: Mapping[str, Mapping[str, str]],
    queries: Mapping[str, Mapping[str, str]],
    *,
    lang: str = "en",
    k: int = 100,
) -> dict[str, list[str]]:
    """Top-k corpus ids per query with BM25."""
    from fingen.embed.bm25 import BM25Index

    ids = list(corpus)
    qids = list(queries)
    index = BM25Index([_doc_text(corpus[i]) for i in ids], lang=lang)
    _, hits = index.search([queries[q]["text"] for q in qids], k=k)
    return {q: [ids[j] for j in row.tolist()] for q, row in zip(qids, hits, strict=True)}


def dense_rankings(
    embedder: Embedder,
    corpus: Mapping[str, Mapping[str, str]],
    queries: Mapping[str, Mapping[str, str]],
    *,
    k: int = 100,
) -> dict[str, list[str]]:
    """Top-k corpus ids per query by embedding inner product (exact, or faiss when present)."""
    from fingen.embed.index import build_index

    ids, qids = list(corpus), list(queries)
    vectors = embedder.encode([_doc_text(corpus[i]) for i in ids], kind="passage")
    qvecs = embedder.encode([queries[q]["text"] for q in qids], kind="query")
    _, hits = build_index(vectors).search(qvecs, k)
    return {q: [ids[j] for j in row.tolist() if j >= 0] for q, row in zip(qids, hits, strict=True)}


def evaluate_beir(
    beir_dir: str | Path,
    models: Sequence[str] = (),
    bm25: bool = True,
    lang: str = "en",
    *,
    embedders: Mapping[str, Embedder] | None = None,
    k: int = 100,
    split: str | None = None,
    files: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate BM25 and embedders on the qrels files of a BEIR directory.

    Args:
        beir_dir: folder with corpus.jsonl, queries.jsonl, qrels/*.tsv.
        models: embedder names or paths for ``load_embedder`` ("minilm", "e5", a path).
        bm25: include BM25.
        lang: tokenization for BM25 ("zh" uses jieba).
        embedders: already loaded embedders by display name (e.g. a run's cached one).
        k: retrieval depth (>= 100 for Recall@100).
        split: only queries of this split (``queries.jsonl`` ``split``; fingen's exports);
            None: every query.
        files: qrels file names (without ``.tsv``) to use; default: every binary file
            (``*_graded`` files are left out).

    Returns:
        ``{"beir_dir", "lang", "corpus", "queries", "levels": {level: n_queries},
        "results": {retriever: {level: {metric: value, "queries": n}}}}``; qrels files
        without any relevant label (e.g. no topic queries) are left out of ``results``.
    """
    from fingen.embed.models import load_embedder

    corpus, queries, qrels = load_beir(beir_dir)
    if files is not None:
        qrels = {name: qrels[name] for name in files if name in qrels}
    else:
        qrels = {name: t for name, t in qrels.items() if not name.endswith("_graded")}
    if split is not None:
        queries = {q: r for q, r in queries.items() if r.get("split", "train") == split}
        qrels = {name: {q: r for q, r in t.items() if q in queries} for name, t in qrels.items()}
    if not qrels:
        raise InputError("no qrels/*.tsv files", path=str(beir_dir))
    wanted = {q for table in qrels.values() for q in table if q in queries}
    asked = {q: queries[q] for q in queries if q in wanted}
    retrievers: dict[str, Any] = {}
    if bm25:
        retrievers["bm25"] = lambda: bm25_rankings(corpus, asked, lang=lang, k=k)
    for name, emb in (embedders or {}).items():
        retrievers[name] = lambda emb=emb: dense_rankings(emb, corpus, asked, k=k)
    for name in models:
        retrievers[name] = lambda name=name: dense_rankings(load_embedder(name), corpus, asked, k=k)
    judged = {
        lvl: t for lvl, t in qrels.items() if any(v > 0 for r in t.values() for v in r.values())
    }
    results = {
        name: {level: evaluate_rankings(rankings, table) for level, table in judged.items()}
        for name, run in retrievers.items()
        for rankings in [run()]
    }
    return {
        "beir_dir": str(beir_dir),
        "lang": lang,
        "split": split,
        "corpus": len(corpus),
        "queries": len(queries),
        "levels": {level: len(table) for level, table in qrels.items()},  # queries per file
        "metric_conventions": "trec_eval: linear gain nDCG, relevant = label > 0",
        "results": results,
    }


def report_table(report: Mapping[str, Any]) -> Table:
    """A rich table: one row per (retriever, level), one column per metric."""
    from rich.table import Table

    table = Table(title=f"Retrieval on {report.get('beir_dir', '')}")
    for col in ("retriever", "qrels", "queries", *METRICS):
        table.add_column(col, justify="left" if col in ("retriever", "qrels") else "right")
    for name, levels in report["results"].items():
        for level, m in levels.items():
            table.add_row(name, level, str(m["queries"]), *(f"{m[x]:.4f}" for x in METRICS))
    return table


def print_report(report: Mapping[str, Any], console: Any = None) -> None:
    """Print ``report_table(report)`` with rich (to ``console`` or stdout)."""
    from rich.console import Console

    (console or Console()).print(report_table(report))
