"""The embedded llama.cpp server process: started on a free loopback port, stopped for sure.

See :mod:`fingen.llm.local` for the rules fingen follows when talking to it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fingen.errors import BackendStartError, MissingExtraError
from fingen.llm.cpus import competing_servers_warning, default_threads, other_llama_servers

__all__ = ["STATE_PATH", "STOP_GRACE_S", "LocalServer"]

STOP_GRACE_S = 3.0  # SIGTERM, then SIGKILL after this long
STATE_PATH = "/fingen/state"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """A ``fingen.llm.serve_local`` child process serving one model on 127.0.0.1."""

    def __init__(
        self, model_path: Path, *, n_ctx: int, n_threads: int | None, log_path: Path
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingExtraError("llama-cpp-python", "local", "backend 'local'")
        self.model_path = model_path
        self.port = _free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root_url + "/v1"
        self.state_url = self.root_url + STATE_PATH
        self.log_path = log_path
        others = len(other_llama_servers())  # before our own server exists
        self.n_threads = n_threads or default_threads(others)
        self.warning = competing_servers_warning(threads=self.n_threads) if others else None
        cmd = [
            sys.executable,
            "-m",
            "fingen.llm.serve_local",
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
        ]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,  # the lifeline: closed by the kernel when fingen dies
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to fingen, which stops the server itself
        )
        atexit.register(self.stop)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def note(self, message: str) -> None:
        """Append a line of fingen's to the server log."""
        if not self._log.closed:
            self._log.write(f"fingen: {message}\n".encode())
            self._log.flush()

    def log_tail(self, chars: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the model is loaded (the state endpoint answers once uvicorn listens,
        which is after the model loaded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise BackendStartError(
                    f"llama.cpp server exited ({self.proc.returncode}): {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.state_url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise BackendStartError(
            f"llama.cpp server not ready after {timeout_s:.0f}s; log: {self.log_path}"
        )

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, SIGKILL after ``grace_s``; idempotent."""
        atexit.unregister(self.stop)
        if self.alive:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except OSError:
                pass
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if not self._log.closed:
            self._log.close()
