"""The scripted server as a child process: ``ServerProcess`` and the command line.

``python -m tests.scripted_server --port 0 --script FILE.json [--latency S] [--port-file
PATH]`` runs :func:`main`; ``ServerProcess`` starts that and waits for the bound port.
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
from pathlib import Path
from typing import Any, Self

from tests.scripted_app import build_app, start_runner
from tests.scripted_rules import Script

__all__ = ["ROOT", "ServerProcess", "main"]

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTION = "A scripted OpenAI-compatible HTTP server for tests (aiohttp)."


class ServerProcess:
    """``python -m tests.scripted_server`` as a child process (it can outlive a killed client)."""

    def __init__(
        self,
        script: dict[str, Any] | None = None,
        *,
        latency: float = 0.0,
        port: int = 0,
        startup_timeout: float = 20.0,
    ) -> None:
        self.script, self.latency, self.port = script or {}, latency, port
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self, with_requests: bool = True) -> dict[str, Any]:
        return self._call("/stats" + ("" if with_requests else "?requests=0"))

    def reset(self) -> None:
        self._call("/reset", {})

    def set_script(self, **parts: Any) -> None:
        self._call("/script", parts)

    def start(self) -> ServerProcess:
        self._dir = tempfile.TemporaryDirectory(prefix="scripted-server-")
        script_file, port_file = (
            Path(self._dir.name, "script.json"),
            Path(self._dir.name, "port"),
        )
        script_file.write_text(json.dumps(self.script))
        cmd = [sys.executable, "-m", "tests.scripted_server", "--port", str(self.port)]
        cmd += ["--script", str(script_file), "--port-file", str(port_file)]
        cmd += ["--latency", str(self.latency)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"scripted server did not start: {cmd}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        return self

    def stop(self) -> None:
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
    spec = json.loads(Path(args.script).read_text()) if args.script else {}
    script = Script(spec.get("actions"), spec.get("rules"), spec.get("default"))
    app = build_app(script, args.latency, spec.get("model", "scripted"))
    runner = await start_runner(app, args.host, args.port, args.backlog)
    port = runner.addresses[0][1]
    if args.port_file:
        tmp = Path(f"{args.port_file}.tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)  # atomic: a reader never sees a partial port
    print(port, flush=True)
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
