"""Audit a finished run's relevance labels by re-judging samples (``fingen audit RUN_DIR``).

Two numbers, each with a 95% Wilson interval:

- **mined precision**: a seeded sample of mined positives (kind "mined") is judged again; the
  share still graded ``>= threshold``.
- **false-negative rate**: for a seeded sample of up to ``4 * sample`` queries, the
  embedder's top-k passages that carry no label at all (no positive, negative or partial)
  are pooled and ``sample`` of them are judged; the share graded ``>= threshold``
  estimates how many relevant passages the labels miss near the top (FinCPRG reports ~4%
  after mining).

The run directory is read by file pattern: passages from ``<passages>.jsonl`` (``chunk``),
queries from ``*.queries.jsonl``, labels from ``*.qrels.jsonl``, ``*.negatives.jsonl`` and
``*.partial.jsonl``. The result is written to ``<run_dir>/audit.json`` and returned.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from fingen.errors import InputError
from fingen.files import atomic_write_text, iter_jsonl
from fingen.records import Passage, Qrel, Query
from fingen.retrieval.judges import Candidate, Judge

if TYPE_CHECKING:
    from fingen.embed.base import Embedder

__all__ = ["audit_run", "wilson_interval"]

R = TypeVar("R", bound=BaseModel)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (``(0.0, 1.0)`` when ``n == 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def _labels(root: Path) -> tuple[dict[tuple[str, str], Qrel], set[tuple[str, str]]]:
    mined: dict[tuple[str, str], Qrel] = {}
    labeled: set[tuple[str, str]] = set()
    for pattern in ("*.qrels.jsonl", "*.negatives.jsonl", "*.partial.jsonl"):
        for path in sorted(root.glob(pattern)):
            for r in iter_jsonl(path, Qrel):
                labeled.add((r.query_id, r.passage_id))
                if r.kind == "mined" and pattern == "*.qrels.jsonl":
                    mined.setdefault((r.query_id, r.passage_id), r)
    return mined, labeled


def _judge_share(
    judge: Judge, pairs: list[Candidate], threshold: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    hits = failed = 0
    rows = []
    for v in judge.judge(pairs):
        if v.score is None:
            failed += 1
            continue
        hits += int(v.score >= threshold)
        rows.append(
            {
                "query_id": v.candidate.query.query_id,
                "passage_id": v.candidate.passage.passage_id,
                "score": v.score,
                "rationale": v.rationale,
            }
        )
    n = len(pairs) - failed
    share = round(hits / n, 4) if n else None
    return {
        "judged": n,
        "relevant": hits,
        "share": share,
        "ci95": wilson_interval(hits, n),
        "failed": failed,
    }, rows


def audit_run(
    run_dir: str | Path,
    sample: int,
    judge: Judge,
    *,
    embedder: Embedder | None = None,
    passages: str = "chunk",
    top_k: int = 10,
    threshold: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Re-judge ``sample`` mined pairs and ``sample`` unlabeled top-k pairs of a run.

    Args:
        run_dir: a run directory (``outputs/<pipeline>/<run>``).
        sample: pairs judged per estimate.
        judge: any ``Judge`` (e.g. ``build_judge("llm", llm=engine)``); ideally a stronger
            or different one than the run used.
        embedder: ranks passages for the false-negative estimate (default: the run's embedder
            from manifest.json, with the run's embedding cache).
        passages: the stage output holding the Passages.
        top_k: depth of the ranking whose unlabeled passages are sampled.
        threshold: lowest grade counted as relevant.
        seed: sampling seed.

    Returns:
        The report also written to ``<run_dir>/audit.json``.
    """
    from fingen.embed.index import build_index

    root = Path(run_dir)
    corpus_path = root / f"{passages}.jsonl"
    if not corpus_path.is_file():
        raise InputError(
            f"no {corpus_path.name}: not a run directory with passages", path=str(root)
        )
    corpus = list(iter_jsonl(corpus_path, Passage))
    by_pid = {p.passage_id: p for p in corpus}
    queries: dict[str, Query] = {}
    for path in sorted(root.glob("*.queries.jsonl")):
        queries.update((q.query_id, q) for q in iter_jsonl(path, Query))
    mined, labeled = _labels(root)
    rng = random.Random(seed)

    mined_pairs = [
        Candidate(queries[q], by_pid[p], "audit")
        for (q, p) in sorted(mined)
        if q in queries and p in by_pid
    ]
    mined_sample = rng.sample(mined_pairs, min(sample, len(mined_pairs)))
    mined_stats, mined_rows = _judge_share(judge, mined_sample, threshold)

    qids = sorted(queries)
    rng.shuffle(qids)
    qids = qids[: max(sample, 1) * 4]
    pool: list[Candidate] = []
    if qids and corpus:
        emb = embedder or _run_embedder(root)
        vectors = emb.encode([p.text for p in corpus], kind="passage")
        qvecs = emb.encode([queries[q].text for q in qids], kind="query")
        scores, hits = build_index(vectors).search(qvecs, top_k)
        for qid, srow, hrow in zip(qids, scores, hits, strict=True):
            for s, i in zip(srow.tolist(), hrow.tolist(), strict=True):
                if i >= 0 and (qid, corpus[i].passage_id) not in labeled:
                    pool.append(Candidate(queries[qid], corpus[i], "audit", s))
    unl_sample = rng.sample(pool, min(sample, len(pool)))
    unl_stats, unl_rows = _judge_share(judge, unl_sample, threshold)

    per_level: dict[str, int] = defaultdict(int)
    for q, _ in mined:
        if q in queries:
            per_level[queries[q].level] += 1
    report = {
        "run_dir": str(root),
        "judge": judge.name,
        "sample": sample,
        "seed": seed,
        "threshold": threshold,
        "mined": {
            "population": len(mined_pairs),
            "by_level": dict(per_level),
            **mined_stats,
            "precision": mined_stats["share"],
        },
        "unlabeled": {
            "top_k": top_k,
            "queries": len(qids),
            "population": len(pool),
            **unl_stats,
            "false_negative_rate": unl_stats["share"],
        },
        "pairs": {"mined": mined_rows, "unlabeled": unl_rows},
    }
    atomic_write_text(root / "audit.json", json.dumps(report, indent=2, ensure_ascii=False))
    return report


def _run_embedder(root: Path) -> Embedder:
    from fingen.embed.models import load_embedder

    manifest = root / "manifest.json"
    name = "minilm"
    if manifest.is_file():
        name = json.loads(manifest.read_text(encoding="utf-8")).get("embedder") or name
    return load_embedder(name, cache_dir=root / "cache")
