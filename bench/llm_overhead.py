"""Client-side overhead of fingen's LLM path against raw HTTP clients (prints a markdown table).

Against the stub OpenAI-compatible server (bench/stub_server.py, run as a separate
process so its CPU is not charged to this one), each path sends the same ``--requests`` chat
requests, ``--concurrency`` at a time, each asking for a small JSON object through a
``json_schema`` response_format; every reply is validated with the same pydantic model.

    (a) raw aiohttp: one ClientSession, TCPConnector(limit=C), a semaphore
    (b) raw httpx.AsyncClient (Limits(max_connections=C)), a semaphore
    (c) bare openai.AsyncOpenAI (max_retries=0), a semaphore
    (d) fingen: build_engine(LLMConfig(backend="openai", ...)) + run_task, with a fresh
        SQLite request cache; (d') the same items again on a new engine over that cache,
        which must send no request (checked with the server's /stats)

Then, against a server that answers after ``--latency`` seconds, (a) and (d) against the
ideal throughput C/L. Client CPU is ``time.process_time()`` of this process (all threads);
server CPU comes from /proc/<pid>/stat. Usage: ``python bench/llm_overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stub_server import StubServerProcess  # noqa: E402 (needs ROOT on sys.path)
from fingen.llm.tasks import LLMTask  # noqa: E402

__all__ = ["Fact", "Row", "main"]


class Fact(BaseModel):
    """The small JSON object every request asks for."""

    ticker: str
    metric: Literal["revenue", "net_income", "eps"]
    value: float
    year: int
    audited: bool


SCHEMA = Fact.model_json_schema()
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "Fact", "schema": SCHEMA}}


def messages_for(i: int) -> list[dict[str, str]]:
    """Distinct messages per item, so every request has its own cache key."""
    return [
        {"role": "system", "content": "You extract financial facts as JSON."},
        {
            "role": "user",
            "content": f"Filing #{i}: ACME reported revenue of {i * 7} million in 2023.",
        },
    ]


def body_for(i: int) -> dict[str, Any]:
    return {
        "model": "bench",
        "messages": messages_for(i),
        "temperature": 0.0,
        "max_tokens": 256,
        "response_format": RESPONSE_FORMAT,
    }


@dataclass
class Row:
    path: str
    latency: float
    requests: int
    concurrency: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float | None
    sent: int  # requests the server saw

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_per_1k(self) -> float:
        return self.client_cpu_s * 1000 / self.requests


def _server_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# --- the paths ---------------------------------------------------------------------------


async def _bounded(
    n: int, concurrency: int, one: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with sem:
            await one(i)

    await asyncio.gather(*(guarded(i) for i in range(n)))


async def raw_aiohttp(url: str, n: int, concurrency: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            async with session.post(
                f"{url}/chat/completions",
                data=json.dumps(body_for(i)),
                headers={"Content-Type": "application/json"},
            ) as resp:
                resp.raise_for_status()
                payload = json.loads(await resp.read())
            Fact.model_validate_json(payload["choices"][0]["message"]["content"])

        await _bounded(n, concurrency, one)


async def raw_httpx(url: str, n: int, concurrency: int) -> None:
    try:
        import httpx
    except ImportError:  # some environments ship the client as httpx2
        import httpx2 as httpx  # type: ignore[no-redef]

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            resp = await client.post(f"{url}/chat/completions", json=body_for(i))
            resp.raise_for_status()
            Fact.model_validate_json(resp.json()["choices"][0]["message"]["content"])

        await _bounded(n, concurrency, one)


async def bare_openai(url: str, n: int, concurrency: int) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)

    async def one(i: int) -> None:
        out = await client.chat.completions.create(
            model="bench",
            messages=messages_for(i),
            temperature=0.0,
            max_tokens=256,
            response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
        )
        Fact.model_validate_json(out.choices[0].message.content or "")

    try:
        await _bounded(n, concurrency, one)
    finally:
        await client.close()


class FactTask(LLMTask):
    """The bench's LLMTask: one item -> one Fact."""

    name = "bench"
    response_model = Fact

    def item_id(self, item: int) -> str:
        return str(item)

    def build(self, item: int) -> list[dict[str, str]]:
        return messages_for(item)

    def parse(self, item: int, reply: Any, completion: Any) -> list[Any]:
        return [reply]


def fingen_full(url: str, n: int, concurrency: int, cache_path: Path) -> None:
    """fingen's path: engine (aiohttp backend, cache, meter) + run_task over ``n`` items."""
    from fingen.config import LLMConfig
    from fingen.llm.engine import build_engine
    from fingen.llm.tasks import run_task

    config = LLMConfig(
        backend="openai", base_url=url, model="bench", concurrency=concurrency, max_retries=0
    )
    engine = build_engine(config, cache_path=cache_path)
    try:
        results = list(run_task(FactTask(), range(n), engine))
    finally:
        engine.close()
    bad = [r for r in results if not r.ok or len(r.records) != 1]
    if len(results) != n or bad:
        raise RuntimeError(f"fingen: {len(bad)} of {len(results)} items failed: {bad[:1]}")


# --- measuring ---------------------------------------------------------------------------


def measure(
    path: str,
    server: StubServerProcess,
    latency: float,
    n: int,
    concurrency: int,
    run: Callable[[], None],
) -> Row:
    """Run one path once and read the server's count of what it received."""
    server.reset()
    pid = server.proc.pid if server.proc else 0
    srv0 = _server_cpu(pid)
    cpu0, t0 = time.process_time(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    srv1 = _server_cpu(pid)
    stats = server.stats()
    non_200 = {k: v for k, v in stats["status_counts"].items() if k != "200"}
    if non_200:
        raise RuntimeError(f"{path}: server answered {non_200}")
    server_cpu = None if srv0 is None or srv1 is None else srv1 - srv0
    return Row(path, latency, n, concurrency, wall, cpu, server_cpu, stats["count"])


def _preload() -> None:
    """Import every client up front so no path pays import time inside its measurement."""
    names = ["aiohttp", "openai", "fingen.config", "fingen.llm.client", "fingen.llm.engine"]
    names += ["fingen.llm.tasks", "fingen.llm.registry"]
    for name in names:
        importlib.import_module(name)
    try:
        importlib.import_module("httpx")
    except ImportError:
        importlib.import_module("httpx2")


def run_suite(args: argparse.Namespace) -> list[Row]:
    n, c = args.requests, args.concurrency
    _preload()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fingen-bench-") as tmp:
        with StubServerProcess(latency=0.0) as srv:
            url = srv.base_url

            def row(path: str, run: Callable[[], None]) -> None:
                rows.append(measure(path, srv, 0.0, n, c, run))
                print(f"  {path}: {rows[-1].rps:,.0f} req/s", file=sys.stderr, flush=True)

            row("(a) raw aiohttp", lambda: asyncio.run(raw_aiohttp(url, n, c)))
            row("(b) raw httpx", lambda: asyncio.run(raw_httpx(url, n, c)))
            row("(c) bare openai.AsyncOpenAI", lambda: asyncio.run(bare_openai(url, n, c)))
            cache = Path(tmp, "cache-l0.sqlite")
            row("(d) fingen engine+run_task", lambda: fingen_full(url, n, c, cache))
            row("(d') fingen, fully cached", lambda: fingen_full(url, n, c, cache))
        if args.latency > 0:
            with StubServerProcess(latency=args.latency) as srv:
                url, lat = srv.base_url, args.latency
                rows.append(
                    measure(
                        "(a) raw aiohttp",
                        srv,
                        lat,
                        n,
                        c,
                        lambda: asyncio.run(raw_aiohttp(url, n, c)),
                    )
                )
                print(f"  (a) L={lat}: {rows[-1].rps:,.1f} req/s", file=sys.stderr, flush=True)
                cache = Path(tmp, "cache-lat.sqlite")
                rows.append(
                    measure(
                        "(d) fingen engine+run_task",
                        srv,
                        lat,
                        n,
                        c,
                        lambda: fingen_full(url, n, c, cache),
                    )
                )
    return rows


def render(rows: list[Row]) -> str:
    """The markdown table and the fingen / raw-aiohttp ratios."""
    lines = [
        (
            "| path | server latency | requests | C | sent | wall s | req/s | ideal C/L | "
            "% of ideal | client CPU s / 1k req | server CPU % of wall |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ideal = r.concurrency / r.latency if r.latency else None
        pct = f"{100 * r.rps / ideal:.1f}" if ideal else "–"
        srv = f"{100 * r.server_cpu_s / r.wall_s:.0f}" if r.server_cpu_s is not None else "n/a"
        lines.append(
            f"| {r.path} | {r.latency:g} s | {r.requests} | {r.concurrency} | {r.sent} | "
            f"{r.wall_s:.2f} | {r.rps:,.1f} | {f'{ideal:g}' if ideal else '–'} | {pct} | "
            f"{r.cpu_per_1k:.3f} | {srv} |"
        )
    by = {(r.path[:3], r.latency): r for r in rows}
    out = ["\n".join(lines), ""]
    for lat in sorted({r.latency for r in rows}):
        raw, fin = by.get(("(a)", lat)), by.get(("(d)", lat))
        if raw and fin:
            out.append(
                f"fingen / raw aiohttp at L={lat:g} s: throughput {fin.rps / raw.rps:.2f}x, "
                f"client CPU per request {fin.cpu_per_1k / raw.cpu_per_1k:.2f}x"
            )
    for r in rows:
        if r.latency and r.path.startswith("(a)"):
            rounds = -(-r.requests // r.concurrency)
            best = r.requests / (rounds * r.latency)
            out.append(
                f"note: {r.requests} requests in waves of {r.concurrency} need {rounds} waves, so "
                f"the best possible at L={r.latency:g} s is {best:.1f} req/s "
                f"({100 * best * r.latency / r.concurrency:.1f}% of C/L)"
            )
    cached = by.get(("(d'", 0.0))
    if cached is not None:
        verdict = "OK" if cached.sent == 0 else "UNEXPECTED"
        out.append(f"fully cached pass sent {cached.sent} requests to the server ({verdict})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5, help="0 skips the latency part")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; measuring...", file=sys.stderr)
    print(render(run_suite(args)))


if __name__ == "__main__":
    main()
