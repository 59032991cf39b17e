"""Scale-out numbers (prints two markdown tables).

1. **Requests/s**, local executor vs Ray executor, against 1 and 2 endpoints. Each endpoint
   is a stub OpenAI-compatible server (a separate process) that answers after ``--latency``
   seconds and serves at most ``--limit`` requests at a time (the rest queue), so one
   endpoint tops out at ``limit / latency`` requests/s. The pipeline is ingest -> chunk ->
   bottom_up over ``--passages`` synthetic passages (one request each); the rate is the
   bottom_up stage's requests over its wall time (Ray: including its actors' start).
   ``llm.concurrency`` is ``--concurrency`` (local: one client; Ray: per actor).
2. **Hard-negative mining**, ``--mining-size`` passages x ``--queries`` queries (384-d,
   ranks 10-100, 15 negatives, relative margin 0.05; bench/mining.py's data and settings):
   the sharded path (``fingen.embed.shards``: .npy shards of ``--shard-rows`` rows,
   memory-mapped, per-shard top-k merged) vs the in-memory path (fingen ``hn-exact``,
   ``hn-faiss``) vs sentence-transformers' ``mine_hard_negatives`` (``st``). Every method
   runs in its own process; time excludes imports and data generation; peak RSS as in
   bench/mining.py (VmHWM after a reset).

Usage: ``python bench/scale.py [--skip-llm] [--skip-mining]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["main"]


# -- a rate-limited stub endpoint ------------------------------------------------------------


def serve(port_file: Path, latency: float, limit: int) -> None:
    """An OpenAI-compatible endpoint: ``limit`` requests at a time, each ``latency`` s."""
    from aiohttp import web

    from fingen.llm.fake import schema_instance

    gate = asyncio.Semaphore(limit)
    count = {"n": 0}

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        async with gate:
            await asyncio.sleep(latency)
        fmt = (body.get("response_format") or {}).get("json_schema") or {}
        schema = fmt.get("schema")
        content = json.dumps(schema_instance(schema) if schema else {})
        count["n"] += 1
        message = {"role": "assistant", "content": content}
        return web.json_response(
            {
                "id": f"stub{count['n']}",
                "object": "chat.completion",
                "model": body.get("model") or "stub",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20},
            }
        )

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"count": count["n"]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port_file.write_text(str(sock.getsockname()[1]))

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=2048).start()
        await asyncio.Event().wait()

    asyncio.run(run())


class Endpoint:
    def __init__(self, latency: float, limit: int) -> None:
        self.dir = tempfile.TemporaryDirectory()
        port_file = Path(self.dir.name) / "port"
        cmd = [sys.executable, __file__, "--serve", str(port_file)]
        cmd += ["--latency", str(latency), "--limit", str(limit)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT)
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the stub endpoint did not start")
            time.sleep(0.05)
        self.base_url = f"http://127.0.0.1:{port_file.read_text()}/v1"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.dir.cleanup()


# -- requests/s ------------------------------------------------------------------------------


def _corpus(path: Path, passages: int) -> None:
    lines = []
    for i in range(passages):
        text = (
            f"Company {i} reported revenue of {100 + i} million dollars in fiscal 2023. "
            f"Operating costs rose {i % 17} percent because of higher freight prices."
        )
        lines.append(json.dumps({"doc_id": f"d{i}", "title": f"Filing {i}", "text": text}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _rate(kind: str, urls: list[str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from fingen.config import PipelineConfig
    from fingen.pipeline import run_pipeline

    docs = work / "docs.jsonl"
    if not docs.exists():
        _corpus(docs, args.passages)
    config = PipelineConfig.model_validate(
        {
            "name": "scale",
            "llm": {
                "backend": "openai", "base_url": urls, "model": "stub", "cache": False,
                "concurrency": args.concurrency, "max_reasks": 0, "max_retries": 0,
                "timeout_s": 600,
            },
            "executor": {"kind": kind, "actors": args.actors, "batch_size": args.batch_size},
            "stages": [
                {"stage": "ingest", "params": {"paths": [str(docs)]}},
                {"stage": "chunk"},
                {"stage": "bottom_up", "params": {"min_chars": 0}},
            ],
        }
    )  # fmt: skip
    run_dir = work / f"{kind}-{len(urls)}"
    result = run_pipeline(config, run_dir)
    entry = result.stages["bottom_up"]
    requests = entry.get("usage", {}).get("requests", 0)
    return {"requests": requests, "wall_s": entry["wall_s"], "rps": requests / entry["wall_s"]}


def bench_llm(args: argparse.Namespace) -> None:
    print(
        f"\n## Requests/s: {args.passages} bottom_up requests, endpoints answer after "
        f"{args.latency:g} s, {args.limit} at a time (ideal {args.limit / args.latency:g} "
        f"req/s per endpoint); llm.concurrency {args.concurrency}; Ray: {args.actors} actors, "
        f"shards of {args.batch_size}\n"
    )
    print("| executor | endpoints | requests | wall (s) | requests/s | vs 1 endpoint |")
    print("|---|---:|---:|---:|---:|---:|")
    endpoints = [Endpoint(args.latency, args.limit) for _ in range(2)]
    ray_started = False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("local", "ray"):
                if kind == "ray":
                    try:
                        import ray
                    except ImportError:
                        print("| ray | - | skipped (ray[data] not installed) | | | |")
                        continue
                    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                    ray.init(num_cpus=args.ray_cpus, include_dashboard=False,
                             logging_level="ERROR", log_to_driver=False)  # fmt: skip
                    ray_started = True
                one = None
                for n in (1, 2):
                    r = _rate(kind, [e.base_url for e in endpoints[:n]], args, Path(tmp))
                    one = one or r["rps"]
                    print(
                        f"| {kind} | {n} | {r['requests']} | {r['wall_s']:.1f} | "
                        f"{r['rps']:.1f} | {r['rps'] / one:.2f}x |",
                        flush=True,
                    )
    finally:
        for e in endpoints:
            e.close()
        if ray_started:
            import ray

            ray.shutdown()


# -- mining ------------------------------------------------------------------------------------


def _sharded_worker(args: argparse.Namespace) -> None:
    """One sharded run: shards written first (not timed), then searched from disk."""
    import numpy as np

    from bench.mining import (
        NUM_NEG,
        RANGE_MAX,
        RANGE_MIN,
        REL_MARGIN,
        _reset_peak,
        _rss_now_mb,
        _rss_peak_mb,
        make_data,
    )
    from fingen.embed.shards import ShardedVectors, write_shards
    from fingen.retrieval.negatives import HardNegativeConfig, hard_negatives_for_vectors

    backend = "faiss" if args.mining_worker.endswith("faiss") else "auto"
    if backend == "auto":
        import torch  # noqa: F401  (imported before timing, like the other methods)
    with tempfile.TemporaryDirectory() as tmp:
        corpus, queries, pos = make_data(args.mining_size, args.queries, 384)
        write_shards([corpus], tmp, shard_rows=args.shard_rows)
        del corpus
        gc.collect()
        vectors = ShardedVectors(tmp)
        config = HardNegativeConfig(
            range_min=RANGE_MIN, range_max=RANGE_MAX, num_negatives=NUM_NEG,
            relative_margin=REL_MARGIN,
        )  # fmt: skip
        base = _rss_now_mb()
        _reset_peak()
        t0 = time.perf_counter()
        out = hard_negatives_for_vectors(
            queries, vectors, [[int(p)] for p in pos], config=config,
            index=vectors.as_index(backend),  # type: ignore[arg-type]
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        note = f"mean negatives {np.mean([len(x) for x in out]):.1f}"
        print(json.dumps({"seconds": seconds, "base_mb": base, "peak_mb": _rss_peak_mb(),
                          "note": note}))  # fmt: skip


def _sharded_run(method: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--mining-worker", method]
    cmd += ["--mining-size", str(args.mining_size), "--queries", str(args.queries)]
    cmd += ["--shard-rows", str(args.shard_rows)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"skipped": f"timeout > {args.timeout:g} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        return {"skipped": f"failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_mining(args: argparse.Namespace) -> None:
    from bench import mining

    n, q = args.mining_size, args.queries
    print(
        f"\n## Hard-negative mining: {n:,} passages x {q:,} queries, 384-d; sharded: "
        f"{args.shard_rows:,}-row shards ({args.shard_rows * 384 * 4 / 1e6:.0f} MB each)\n"
    )
    print("| method | time (s) | peak RSS (MB) | base RSS (MB) | note |")
    print("|---|---:|---:|---:|---|")
    margs = argparse.Namespace(queries=q, dim=384, timeout=args.timeout, max_gb=args.max_gb)
    methods: list[tuple[str, Any]] = [
        ("sharded (torch top-k)", lambda: _sharded_run("sharded", args)),
        ("sharded (faiss per shard)", lambda: _sharded_run("sharded-faiss", args)),
        ("in memory: hn-exact", lambda: mining.run_one("hn-exact", n, margs)),
        ("in memory: hn-faiss", lambda: mining.run_one("hn-faiss", n, margs)),
        ("sentence-transformers mine_hard_negatives", lambda: mining.run_one("st", n, margs)),
    ]
    for name, go in methods:
        r = go()
        if "skipped" in r:
            print(f"| {name} | skipped ({r['skipped']}) | | | |", flush=True)
            continue
        print(
            f"| {name} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {r['base_mb']:.0f} "
            f"| {r['note']} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=240)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=4, help="requests at a time per endpoint")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--mining-size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--max-gb", type=float, default=10.0)
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--skip-mining", action="store_true")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mining-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            serve(args.serve, args.latency, args.limit)
        return
    if args.mining_worker:
        _sharded_worker(args)
        return
    print(f"cpus {os.cpu_count()}")
    if not args.skip_llm:
        bench_llm(args)
    if not args.skip_mining:
        bench_mining(args)


if __name__ == "__main__":
    main()
