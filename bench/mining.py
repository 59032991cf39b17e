"""Time and peak memory of mining top-k search and hard-negative search (prints a markdown table).

Synthetic data per size: ``N`` random unit 384-d passage vectors and ``Q`` queries, each a
noisy copy of one passage (its positive, cosine ~0.7), seeded. Each (size, method) runs in its
own subprocess; time excludes imports and data generation. Memory: "base" is the child's
RSS once imports and data exist; "peak" its peak RSS while the method ran (VmHWM, reset
through /proc/self/clear_refs just before; ru_maxrss where /proc is absent), so
peak - base is what the method itself added.

Methods:
    topk-exact / topk-faiss   mining's global top-k (k=10): fingen ExactIndex / FaissIndex
    hn-exact / hn-faiss       fingen ``hard_negatives_for_vectors``: ranks 10-100, relative
                              margin 0.05, 15 negatives, top sampling
    st / st-faiss             sentence-transformers ``mine_hard_negatives`` with the same
                              settings (``output_format="n-tuple"``), fed the same vectors through
                              a stub model (it takes a dataset and a model, not embeddings);
                              its time includes building the output ``datasets.Dataset``

A run that would need more than ``--max-gb`` or exceeds ``--timeout`` seconds is reported as
"skipped (reason)". Usage: ``python bench/mining.py [--sizes 10000 100000 1000000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["main", "make_data"]

METHODS = ["topk-exact", "topk-faiss", "hn-exact", "hn-faiss", "st", "st-faiss"]
RANGE_MIN, RANGE_MAX, NUM_NEG, REL_MARGIN, TOP_K = 10, 100, 15, 0.05, 10


def make_data(n: int, q: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corpus (n, dim), queries (q, dim), positive index per query), all unit float32."""
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((n, dim), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    pos = rng.choice(n, size=q, replace=False)
    queries = corpus[pos] + rng.standard_normal((q, dim), dtype=np.float32) / np.float32(dim**0.5)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return corpus, queries, pos


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so the peak is the method's own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _rss_now_mb() -> float:
    return _status_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_peak_mb() -> float:
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StubModel:
    """Just enough of a SentenceTransformer for ``mine_hard_negatives``: texts "p<i>"/"q<i>"
    map to rows of precomputed vectors (the whole corpus in order is returned without copy)."""

    def __init__(self, corpus: np.ndarray, queries: np.ndarray) -> None:
        import torch

        self.corpus, self.queries, self.device = corpus, queries, torch.device("cpu")

    def _lookup(self, texts: list[str], table: np.ndarray) -> np.ndarray:
        if (
            len(texts) == len(table)
            and texts[0][1:] == "0"
            and texts[-1][1:] == str(len(table) - 1)
        ):
            return table
        return table[[int(t[1:]) for t in texts]]

    def encode_document(self, texts: list[str], **_: Any) -> np.ndarray:
        return self._lookup(texts, self.corpus)

    def encode_query(self, texts: list[str], **_: Any) -> np.ndarray:
        return self._lookup(texts, self.queries)

    def similarity(self, a: Any, b: Any) -> Any:
        import torch

        return torch.as_tensor(a) @ torch.as_tensor(b).T

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        import torch

        return (torch.as_tensor(a) * torch.as_tensor(b)).sum(-1)

    def get_embedding_dimension(self) -> int:
        return int(self.corpus.shape[1])


def _run_method(method: str, corpus: np.ndarray, queries: np.ndarray, pos: np.ndarray) -> str:
    from fingen.embed.index import ExactIndex, FaissIndex
    from fingen.retrieval.negatives import HardNegativeConfig, hard_negatives_for_vectors

    faiss = method.endswith("faiss")
    if method.startswith("topk"):
        index = FaissIndex(corpus) if faiss else ExactIndex(corpus)
        index.search(queries, TOP_K)
        return f"k={TOP_K}"
    if method.startswith("hn"):
        config = HardNegativeConfig(
            range_min=RANGE_MIN,
            range_max=RANGE_MAX,
            num_negatives=NUM_NEG,
            relative_margin=REL_MARGIN,
        )
        index = FaissIndex(corpus) if faiss else ExactIndex(corpus)
        out = hard_negatives_for_vectors(
            queries, corpus, [[int(p)] for p in pos], config=config, index=index
        )
        return f"mean negatives {np.mean([len(x) for x in out]):.1f}"
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    ds = datasets.Dataset.from_dict(
        {"query": [f"q{i}" for i in range(len(queries))], "answer": [f"p{int(p)}" for p in pos]}
    )
    out = mine_hard_negatives(
        ds,
        StubModel(corpus, queries),  # type: ignore[arg-type]
        corpus=[f"p{i}" for i in range(len(corpus))],
        range_min=RANGE_MIN,
        range_max=RANGE_MAX,
        relative_margin=REL_MARGIN,
        num_negatives=NUM_NEG,
        sampling_strategy="top",
        output_format="n-tuple",
        faiss_batch_size=256,
        use_faiss=faiss,
        verbose=False,
    )
    return f"{len(out)} rows"


def _import_for(method: str) -> None:
    """Import what the method needs first, so neither import time nor data is charged to it."""
    import fingen.embed.index
    import fingen.retrieval.negatives  # noqa: F401

    if method.endswith("faiss"):
        import faiss  # noqa: F401
    if method.startswith("st"):
        import datasets  # noqa: F401
        import sentence_transformers.util  # noqa: F401


def worker(args: argparse.Namespace) -> None:
    _import_for(args.worker)
    corpus, queries, pos = make_data(args.size, args.queries, args.dim)
    base_mb = _rss_now_mb()
    _reset_peak()
    t0 = time.perf_counter()
    note = _run_method(args.worker, corpus, queries, pos)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {"seconds": seconds, "base_mb": base_mb, "peak_mb": _rss_peak_mb(), "note": note}
        )
    )


def _available(method: str) -> str | None:
    mods = {"faiss": "faiss", "st": "sentence_transformers"}
    for key, mod in mods.items():
        if key in method:
            try:
                __import__(mod)
            except ImportError:
                return f"{mod} not installed"
    return None


def _estimate_gb(method: str, n: int, q: int, dim: int) -> float:
    data = (n + q) * dim * 4
    extra = 256 * n * 4 * 3 if method.startswith("st") else 256 * 16384 * 4 * 3
    if method.startswith("st"):
        extra += n * 120  # corpus strings, the dedup dict and the text -> index map
    return (data + extra) / 1e9


def run_one(method: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One (method, size) in a subprocess; a dict with seconds/peak_mb or a skip reason."""
    reason = _available(method)
    if reason is None and _estimate_gb(method, n, args.queries, args.dim) > args.max_gb:
        reason = (
            f"needs ~{_estimate_gb(method, n, args.queries, args.dim):.0f} GB > {args.max_gb:g} GB"
        )
    if reason is not None:
        return {"skipped": reason}
    cmd = [sys.executable, __file__, "--worker", method, "--size", str(n)]
    cmd += ["--queries", str(args.queries), "--dim", str(args.dim)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=args.timeout,
            cwd=ROOT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"timeout > {args.timeout:g} s"}
    if proc.returncode != 0:
        return {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1][:120]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--max-gb", type=float, default=10.0, help="skip runs needing more")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    print(
        f"{args.queries} queries, dim {args.dim}, cpus {os.cpu_count()}; "
        f"hard negatives: ranks {RANGE_MIN}-{RANGE_MAX}, {NUM_NEG} negatives, "
        f"relative margin {REL_MARGIN}\n"
    )
    print("| passages | method | time (s) | ms/query | peak RSS (MB) | base RSS (MB) | note |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for n in args.sizes:
        for method in args.methods:
            r = run_one(method, n, args)
            if "skipped" in r:
                print(f"| {n:,} | {method} | skipped ({r['skipped']}) | | | | |", flush=True)
                continue
            per_q = 1000 * r["seconds"] / args.queries
            print(
                f"| {n:,} | {method} | {r['seconds']:.2f} | {per_q:.2f} | {r['peak_mb']:.0f} "
                f"| {r['base_mb']:.0f} | {r['note']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
