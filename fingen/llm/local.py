"""The embedded default: a packaged GGUF model served by llama.cpp on loopback.

The server is ``python -m fingen.llm.serve_local`` (``llama_cpp.server`` plus the additions
described there), a child process on a free port, started by the first request, so a run whose
LLM stages have nothing to do never starts it. fingen talks to it with the OpenAI-compatible
client (``json_object`` + ``schema`` structured output, since llama.cpp answers ``json_schema``
with HTTP 500), with these rules:

* **Requests are streamed and timed by progress, not by the clock.** The server computes one
  request at a time; the others wait in its queue. Every request is sent with ``stream: true``
  and its chunks are put together into the same ``Completion`` a non-streamed reply gives (text,
  ``finish_reason``, usage as the server counted it). A request fails as *stalled* only when the
  server made no progress at all for ``llm.timeout_s``: no token on any of fingen's
  connections, no request finished, no prompt batch evaluated (read from the server's state
  endpoint). Unless ``timeout_s`` is set in the configuration, the local backend uses 600 s
  rather than the 120 s meant for remote servers. A slow CPU therefore makes a run slower, never
  a storm of retries.
* **A retry never runs beside the request it replaces.** Before any retry the abandoned request
  is closed (a streamed generation stops at its next token) and fingen waits until the server
  reports it no longer handles it; a server that stalled, or that does not let go of an abandoned
  request within the stall timeout, is killed and started again, and a server that died is
  started again. Every retry is counted in the usage meter (``transport_retries``).
* **The server dies with fingen** (its stdin watchdog, see :mod:`fingen.llm.serve_local`),
  within about a second, even when fingen is killed with SIGKILL mid-generation. At close, at
  exit and on Ctrl-C fingen stops it with SIGTERM, then SIGKILL after ``STOP_GRACE_S`` seconds.
* **Threads.** ``llm.local.n_threads`` defaults to the physical cores this process may use
  (affinity mask and cgroup quota, :func:`fingen.llm.cpus.usable_cpus`), for generation and for
  prompt batches, shared equally with llama.cpp servers already running on the machine
  (:func:`fingen.llm.cpus.default_threads`): their threads busy-wait, and two servers with a
  thread per core each ran 68x slower in our measurement. ``backend.warning`` then holds a line
  to show, and the server log says so.
* **Live numbers.** ``backend.live()`` returns ``{"queued", "running", "tokens_per_s"}``:
  requests waiting (in fingen or in the server's queue, or having their prompt read), requests
  receiving tokens, and generated tokens per second over the last seconds.

The server's log is ``<cache>/fingen/logs/llama-server-<fingen pid>.log``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from fingen.errors import (
    BackendRejected,
    TransportError,
)
from fingen.llm.base import ChatRequest, Completion, Usage
from fingen.llm.client import (
    _FATAL_STATUS,
    _RETRY_STATUS,
    OpenAICompatBackend,
    _retry_after,
    _Retryable,
)
from fingen.llm.config import LLMConfig
from fingen.llm.local_models import cache_dir, resolve_local_model
from fingen.llm.local_server import LocalServer

__all__ = ["LocalServer", "create_local_backend", "resolve_local_model"]

LOCAL_STALL_TIMEOUT_S = 600.0  # the local default of llm.timeout_s (no progress at all)
TOKEN_RATE_WINDOW_S = 10.0
REQUEST_HEADER = "X-Fingen-Request"


class _Truncated(Exception):
    """The stream ended without a finish_reason."""


class _LocalBackend(OpenAICompatBackend):
    """The client of the embedded server: streamed requests, progress-based stall detection,
    retries that never overlap the request they replace, restarts of a dead or stalled server."""

    def __init__(self, model_path: Path, model: str, config: LLMConfig, log_path: Path) -> None:
        explicit = "timeout_s" in config.model_fields_set
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
        # No wall-clock limit per request: a request waits its turn in the server's queue.
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        self.stall_s = config.timeout_s if explicit else LOCAL_STALL_TIMEOUT_S
        self._poll_s = max(0.2, min(5.0, self.stall_s / 10))
        self.model_path, self.config, self.log_path = model_path, config, log_path
        self.server: LocalServer | None = None
        self.warning: str | None = None
        self.restarts = 0
        self._generation = 0  # server starts so far; an attempt remembers the one it used
        self._starting: asyncio.Lock | None = None
        self._control: aiohttp.ClientSession | None = None
        self._monitor: asyncio.Task | None = None
        self._requests = 0  # inside complete(): waiting, at the server, or between retries
        self._attempts = 0  # sent to the server and not yet answered
        self._running = 0  # receiving tokens
        self._progress_at = time.monotonic()
        self._token_times: collections.deque[float] = collections.deque(maxlen=100_000)
        self._token_lock = threading.Lock()
        self._busy_since = time.monotonic()
        # The port changes every start: identify the weights, not the endpoint.
        self.identity = f"local:{model_path.name}:{model_path.stat().st_size}:{model}"

    # -- live numbers ----------------------------------------------------------------------
    def live(self) -> dict[str, float]:
        """``queued``: requests not yet receiving tokens; ``running``: requests receiving
        tokens; ``tokens_per_s``: generated tokens per second over the last few seconds."""
        now = time.monotonic()
        with self._token_lock:  # the console asks from its own thread
            times = self._token_times
            while times and times[0] < now - TOKEN_RATE_WINDOW_S:
                times.popleft()
            recent = len(times)
        span = max(1.0, min(TOKEN_RATE_WINDOW_S, now - self._busy_since))
        return {
            "queued": max(0, self._requests - self._running),
            "running": self._running,
            "tokens_per_s": round(recent / span, 2),
        }

    def _progress(self) -> None:
        self._progress_at = time.monotonic()

    # -- the server ------------------------------------------------------------------------
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

    async def _ensure_server(self) -> None:
        if self.server is not None and self.server.alive:
            return
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            old = self.server
            if old is not None and not old.alive:
                old.note(f"server exited ({old.proc.returncode}); starting a new one")
                old.stop()
                self.server = None
                self.restarts += 1
            if self.server is None:
                server = await asyncio.to_thread(self._start)
                self.server, self.warning = server, server.warning
                self.url = server.base_url + "/chat/completions"
                self._generation += 1
                self._progress()

    async def _restart(self, generation: int, reason: str) -> None:
        """Kill the server that ``generation`` used (unless already replaced); the next
        attempt starts a new one. Requests still on it fail and are retried there."""
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            server = self.server
            if server is None or generation != self._generation:
                return
            server.note(f"killing the server: {reason}")
            self.server = None
            self.restarts += 1
            await asyncio.to_thread(server.stop, 1.0)
            self._generation += 1  # attempts on the old server know it is gone

    def _control_session(self) -> aiohttp.ClientSession:
        if self._control is None or self._control.closed:
            self._control = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10),
                connector=aiohttp.TCPConnector(limit=4),
            )
        return self._control

    async def _state(self, server: LocalServer) -> dict[str, Any] | None:
        """The server's lock-free state, or None when it cannot tell."""
        try:
            async with self._control_session().get(server.state_url) as resp:
                if resp.status != 200:
                    return None
                state = await resp.json()
                return state if isinstance(state, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def _watch(self) -> None:
        """While requests are at the server: count evaluated prompt batches and finished
        requests as progress, and replace a server that made none for ``stall_s``."""
        last: tuple | None = None
        while self._attempts > 0:
            await asyncio.sleep(self._poll_s)
            try:
                last = await self._check_progress(last)
            except Exception as exc:  # the watch must outlive any surprise
                if self.server is not None:
                    self.server.note(f"progress watch error: {exc!r}")

    async def _check_progress(self, last: tuple | None) -> tuple | None:
        server, generation = self.server, self._generation
        if server is None:
            return None
        state = await self._state(server)
        if state is not None:
            signature = (state.get("running"), state.get("n_tokens"), state.get("finished"))
            if last is not None and signature != last:
                self._progress()
            last = signature
        idle = time.monotonic() - self._progress_at
        if self._attempts > 0 and idle > self.stall_s:
            await self._restart(generation, f"no progress for {idle:.0f}s")
            return None
        return last

    async def _settle(self, server: LocalServer, generation: int, rid: str) -> None:
        """Return once the server no longer handles request ``rid`` (a closed stream stops at
        the next token; a prompt being read is finished first); kill the server when it still
        does after ``stall_s``."""
        deadline = time.monotonic() + self.stall_s
        while generation == self._generation and server.alive:
            state = await self._state(server)
            if state is None:  # no state endpoint: wait until the model lock is free
                remaining = max(1.0, deadline - time.monotonic())
                try:
                    async with self._control_session().get(
                        server.base_url + "/models",
                        timeout=aiohttp.ClientTimeout(total=remaining),
                    ) as resp:
                        await resp.read()
                        return
                except (aiohttp.ClientError, TimeoutError):
                    break
            elif rid not in (state.get("open") or []):
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        if generation == self._generation and server.alive:
            await self._restart(generation, f"request {rid} still handled after it was abandoned")

    # -- requests --------------------------------------------------------------------------
    def _body(self, req: ChatRequest) -> dict[str, Any]:
        body = super()._body(req)
        body["stream"] = True
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        if self._requests == 0:
            self._busy_since = time.monotonic()
        self._requests += 1
        try:
            await self._ensure_server()
            return await super().complete(request)
        finally:
            self._requests -= 1

    async def _post(self, data: bytes) -> Completion:
        await self._ensure_server()
        server, generation = self.server, self._generation
        assert server is not None and self._session is not None
        rid = uuid.uuid4().hex
        headers = {**self._headers, REQUEST_HEADER: rid}
        if self._attempts == 0:
            self._progress()  # the server was idle as far as we know: the clock starts now
        self._attempts += 1
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.get_running_loop().create_task(self._watch())
        try:
            async with self._session.post(
                server.base_url + "/chat/completions", data=data, headers=headers
            ) as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    self._progress()
                    _raise_for_status(resp.status, raw, resp.headers, self.url)
                try:
                    completion = await self._read_stream(resp, data)
                except _Truncated as exc:
                    resp.close()
                    await self._settle(server, generation, rid)
                    raise _Retryable(f"{exc} from {self.url}") from None
                self._progress()
                return completion
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            if generation != self._generation:
                raise _Retryable("the llama.cpp server was restarted") from None
            if not server.alive:
                raise _Retryable(
                    f"the llama.cpp server exited ({server.proc.returncode}); see {server.log_path}"
                ) from None
            await self._settle(server, generation, rid)
            raise _Retryable(f"connection error: {exc!r}") from None
        finally:
            self._attempts -= 1

    async def _read_stream(self, resp: aiohttp.ClientResponse, data: bytes) -> Completion:
        text: list[str] = []
        reasoning: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None
        model = self.model
        tokens = 0
        started = False
        try:
            async for raw_line in resp.content:
                line = raw_line.strip()
                if not line.startswith(b"data:"):
                    continue  # ": ping" comments come even while the request is queued
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise _Truncated(f"malformed stream chunk {payload[:200]!r}") from None
                if not isinstance(chunk, dict):
                    raise _Truncated(f"malformed stream chunk {payload[:200]!r}")
                if "error" in chunk:
                    error = chunk["error"] or {}
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise TransportError(
                        f"llama.cpp server error: {message}", status=400, attempts=1
                    )
                now = time.monotonic()
                self._progress_at = now
                if not started:  # the first chunk comes once the prompt is read
                    started = True
                    self._running += 1
                model = chunk.get("model") or model
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") is not None:
                        text.append(delta["content"])
                        tokens += 1
                        with self._token_lock:
                            self._token_times.append(now)
                    extra = delta.get("reasoning_content") or delta.get("reasoning")
                    if extra:
                        reasoning.append(extra)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        finally:
            if started:
                self._running -= 1
        if finish is None:
            raise _Truncated("the stream ended without a finish_reason")
        if usage is None:  # not our server: count chunks, estimate the prompt
            usage = {"prompt_tokens": _estimate_prompt_tokens(data), "completion_tokens": tokens}
        return Completion(
            text="".join(text),
            reasoning="".join(reasoning) or None,
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            ),
            model=model,
        )

    async def aclose(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None
        if self._control is not None:
            await self._control.close()
            self._control = None
        await super().aclose()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)


def _estimate_prompt_tokens(data: bytes) -> int:
    try:
        messages = json.loads(data).get("messages") or []
        return sum(len(str(m.get("content", ""))) for m in messages) // 4
    except (ValueError, AttributeError):
        return 0


def _raise_for_status(status: int, raw: bytes, headers: Any, url: str) -> None:
    """The base client's classification of a non-200 answer."""
    msg = f"HTTP {status} from {url}: {raw[:300].decode('utf-8', 'replace')}"
    if status in _RETRY_STATUS:
        raise _Retryable(msg, status, _retry_after(headers))
    if status in _FATAL_STATUS:
        raise BackendRejected(msg, status=status)
    raise TransportError(msg, status=status, attempts=1)


def create_local_backend(config: LLMConfig) -> OpenAICompatBackend:
    """A client for the embedded model ``config.local.model`` (its server starts on first use)."""
    model_path = resolve_local_model(config.local.model)
    log_path = cache_dir() / "logs" / f"llama-server-{os.getpid()}.log"
    return _LocalBackend(model_path, config.model or model_path.stem, config, log_path)
