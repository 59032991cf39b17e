"""A minimal OpenAI-compatible stub server for benchmarks (aiohttp), independent of tests/.

``POST /v1/chat/completions`` answers 200, after ``latency`` seconds, with a fixed JSON
reply when one is configured, else a minimal valid instance of the request's
``response_format`` schema (``{}`` when it asks for none). ``GET /health`` says it is up;
``GET /stats`` gives ``count`` (chat requests since start or the last ``POST /reset``) and
``status_counts``.

Run it as ``python -m bench.stub_server --port 0 --port-file PATH --latency S`` from the
repository root, or with ``with StubServerProcess(latency=S) as srv: ... srv.base_url``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from fingen.llm.fake import schema_instance

__all__ = ["StubServerProcess", "build_app", "main"]

ROOT = Path(__file__).resolve().parents[1]


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks for (``json_schema`` or ``json_object`` + ``schema``)."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    return fmt.get("schema") if fmt.get("type") == "json_object" else None


def build_app(latency: float = 0.0, reply: Any = None) -> web.Application:
    """The aiohttp application: ``reply`` (any JSON value) or a schema instance per request."""
    counts: Counter[int] = Counter()

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if latency > 0:
            await asyncio.sleep(latency)
        schema = _schema(body)
        value = reply if reply is not None else schema_instance(schema) if schema else {}
        content = json.dumps(value)
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages") or [])
        usage = {"prompt_tokens": prompt // 4 + 1, "completion_tokens": len(content) // 4 + 1}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        counts[200] += 1
        message = {"role": "assistant", "content": content}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        out = {"id": f"chatcmpl-stub{sum(counts.values()):08d}", "object": "chat.completion"}
        out |= {"created": int(time.time()), "model": body.get("model") or "stub"}
        return web.json_response(out | {"choices": [choice], "usage": usage})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(_: web.Request) -> web.Response:
        status_counts = {str(k): v for k, v in sorted(counts.items())}
        return web.json_response({"count": sum(counts.values()), "status_counts": status_counts})

    async def reset(_: web.Request) -> web.Response:
        counts.clear()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    return app


class StubServerProcess:
    """``python -m bench.stub_server`` as a child process, so its CPU is not the caller's."""

    def __init__(self, *, latency: float = 0.0, reply: Any = None, timeout: float = 20.0) -> None:
        self.latency, self.reply, self.startup_timeout, self.port = latency, reply, timeout, 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, path: str, post: bool = False) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        req = urllib.request.Request(url, data=b"{}" if post else None)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """``{"count": N, "status_counts": {"200": N, ...}}``."""
        return self._call("/stats")

    def reset(self) -> None:
        """Zero the request counters."""
        self._call("/reset", post=True)

    def start(self) -> Self:
        """Start the child and wait until it has bound a port and answers ``/health``."""
        self._dir = tempfile.TemporaryDirectory(prefix="stub-server-")
        port_file = Path(self._dir.name, "port")
        cmd = [sys.executable, "-m", "bench.stub_server", "--port", "0"]
        cmd += ["--port-file", str(port_file), "--latency", str(self.latency)]
        if self.reply is not None:
            cmd += ["--reply", json.dumps(self.reply)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stub server did not start: {cmd}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self._call("/health")
        return self

    def stop(self) -> None:
        """Terminate the child (kill it after 5 s) and remove the temporary folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(args: argparse.Namespace) -> None:
    reply = json.loads(args.reply) if args.reply is not None else None
    runner = web.AppRunner(build_app(args.latency, reply), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port, backlog=args.backlog).start()
    port = runner.addresses[0][1]
    if args.port_file:
        tmp = Path(f"{args.port_file}.tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)  # atomic: a reader never sees a partial port
    print(port, flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here (atomically)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--reply", help="fixed JSON reply (default: a schema instance)")
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
