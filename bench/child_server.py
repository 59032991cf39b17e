"""A loopback HTTP server run as a child process (``python -m <module> --port-file PATH``).

The benchmarks' stub server and the tests' scripted server both use it: the child binds a
free port and writes it to a file (:func:`announce_port`); :class:`ChildServer` starts the
child, waits for that file and stops the child (terminate, then kill after 5 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

__all__ = ["ROOT", "ChildServer", "announce_port"]

ROOT = Path(__file__).resolve().parents[1]


def announce_port(port: int, port_file: str | None) -> None:
    """Write the bound port to ``port_file`` atomically (a reader never sees half of it)
    and print it."""
    if port_file:
        tmp = Path(f"{port_file}.tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)
    print(port, flush=True)


class ChildServer:
    """``python -m <module>`` as a child process, so its CPU is not the caller's and it can
    outlive a killed client. Subclasses name the module and add their arguments."""

    module = ""
    health_path: str | None = None

    def __init__(self, *, port: int = 0, startup_timeout: float = 20.0) -> None:
        self.port, self.startup_timeout = port, startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def arguments(self, folder: Path) -> list[str]:
        """Extra command-line arguments (files for them may go in ``folder``)."""
        return []

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def start(self) -> Self:
        """Start the child and wait until it has bound a port (and answers its health path)."""
        self._dir = tempfile.TemporaryDirectory(prefix=f"{self.module.rsplit('.', 1)[-1]}-")
        folder = Path(self._dir.name)
        port_file = folder / "port"
        cmd = [sys.executable, "-m", self.module, "--port", str(self.port)]
        cmd += ["--port-file", str(port_file), *self.arguments(folder)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.module} did not start: {cmd}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        if self.health_path is not None:
            self._call(self.health_path)
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
