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
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.child_server import ChildServer, announce_port
from fingen.llm.fake import schema_instance

__all__ = ["StubServerProcess", "build_app", "main"]


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


class StubServerProcess(ChildServer):
    """``python -m bench.stub_server`` as a child process, so its CPU is not the caller's."""

    module = "bench.stub_server"
    health_path = "/health"

    def __init__(self, *, latency: float = 0.0, reply: Any = None, timeout: float = 20.0) -> None:
        super().__init__(startup_timeout=timeout)
        self.latency, self.reply = latency, reply

    def arguments(self, folder: Path) -> list[str]:
        args = ["--latency", str(self.latency)]
        return args + (["--reply", json.dumps(self.reply)] if self.reply is not None else [])

    def stats(self) -> dict[str, Any]:
        """``{"count": N, "status_counts": {"200": N, ...}}``."""
        return self._call("/stats")

    def reset(self) -> None:
        """Zero the request counters."""
        self._call("/reset", {})


async def _serve(args: argparse.Namespace) -> None:
    reply = json.loads(args.reply) if args.reply is not None else None
    runner = web.AppRunner(build_app(args.latency, reply), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port, backlog=args.backlog).start()
    announce_port(runner.addresses[0][1], args.port_file)
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
