"""The scripted server as a child process: ``ServerProcess`` and the command line.

``python -m tests.scripted_server --port 0 --script FILE.json [--latency S] [--port-file
PATH]`` runs :func:`main`; ``ServerProcess`` starts that and waits for the bound port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from bench.child_server import ROOT, ChildServer, announce_port
from tests.scripted_app import build_app, start_runner
from tests.scripted_rules import Script

__all__ = ["ROOT", "ServerProcess", "main"]

DESCRIPTION = "A scripted OpenAI-compatible HTTP server for tests (aiohttp)."


class ServerProcess(ChildServer):
    """``python -m tests.scripted_server`` as a child process (it can outlive a killed client)."""

    module = "tests.scripted_server"

    def __init__(
        self,
        script: dict[str, Any] | None = None,
        *,
        latency: float = 0.0,
        port: int = 0,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.script, self.latency = script or {}, latency

    def arguments(self, folder: Path) -> list[str]:
        script_file = folder / "script.json"
        script_file.write_text(json.dumps(self.script))
        return ["--script", str(script_file), "--latency", str(self.latency)]

    def stats(self, with_requests: bool = True) -> dict[str, Any]:
        return self._call("/stats" + ("" if with_requests else "?requests=0"))

    def reset(self) -> None:
        self._call("/reset", {})

    def set_script(self, **parts: Any) -> None:
        self._call("/script", parts)


async def _serve(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.script).read_text()) if args.script else {}
    script = Script(spec.get("actions"), spec.get("rules"), spec.get("default"))
    app = build_app(script, args.latency, spec.get("model", "scripted"))
    runner = await start_runner(app, args.host, args.port, args.backlog)
    announce_port(runner.addresses[0][1], args.port_file)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve a script file until killed."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--script", help='JSON file: {"actions": [], "rules": [], "default": {}}')
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument("--port-file", help="write the bound port here (atomically)")
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
