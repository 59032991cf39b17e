"""``python -m fingen.llm.serve_local [llama_cpp.server options]``: the embedded model server.

It is ``llama_cpp.server`` (same options, same OpenAI-compatible API) with what fingen needs to
keep runs sound:

* **It dies with fingen.** fingen holds the write end of the server's stdin pipe and nothing
  else writes to it. A watchdog thread waits on it: end of file, which the kernel delivers when
  fingen's process is gone however it ended (SIGKILL included), or a change of parent pid, make
  the server ``os._exit`` at once, even in the middle of a generation. (``PR_SET_PDEATHSIG``
  fires when the *thread* that forked dies, and fingen starts the server from a worker thread;
  SIGTERM waits for a running non-streaming generation.) When stdin is not a pipe (started by
  hand) there is no watchdog.
* **Streams are never cut short.** ``interrupt_requests`` is forced off: with it on, any queued
  request ends the running streamed generation early.
* **A lock-free state endpoint.** ``GET /fingen/state`` answers at once, even while a
  generation runs (``/v1/models`` waits for the model lock): ``open`` lists the
  ``X-Fingen-Request`` ids whose HTTP request the server is still handling, ``running`` the id
  holding the model, ``n_tokens`` the model's evaluated tokens (it grows per prompt batch and
  per generated token, so it shows progress while a long prompt is being read), ``finished``
  counts handled requests. A request id that is no longer in ``open`` costs no more compute.
* **Usage in streams and errors as events.** The chunk carrying ``finish_reason`` gets a
  ``usage`` object (prompt tokens as evaluated; generated tokens, less the end-of-generation
  token when ``finish_reason`` is ``stop``); an exception while streaming (e.g. a prompt longer
  than the context) becomes a ``data: {"error": {...}}`` event instead of a broken connection.
* **Competition is logged.** At start it writes a line to its log when another llama.cpp
  server runs on the machine (see :mod:`fingen.llm.cpus`).

Each addition checks what it patches; when llama-cpp-python's internals differ it is skipped
and the state endpoint says which (``instrumented``), and the client falls back to safe,
slower rules.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import logging
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from fingen.llm.local_server import STATE_PATH

__all__ = ["main"]

REQUEST_HEADER = b"x-fingen-request"

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fingen_request", default=None
)


def _log(message: str) -> None:
    print(f"fingen-serve: {message}", file=sys.stderr, flush=True)


# -- dying with fingen -----------------------------------------------------------------------
def _watch_parent(fd: int, parent: int) -> None:
    reason = ""
    while not reason:
        try:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready and not os.read(fd, 4096):
                reason = "stdin closed"
        except OSError as exc:
            reason = f"stdin error {exc}"
        if not reason and os.getppid() != parent:
            reason = f"parent {parent} gone"
    with contextlib.suppress(Exception):
        _log(f"{reason}: fingen is gone, exiting now")
    os._exit(3)


def start_watchdog() -> bool:
    """Exit this process as soon as stdin (a pipe from fingen) closes; False if no pipe."""
    try:
        fd = sys.stdin.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
    except (AttributeError, OSError, ValueError):
        return False
    thread = threading.Thread(
        target=_watch_parent, args=(fd, os.getppid()), daemon=True, name="fingen-watchdog"
    )
    thread.start()
    return True


# -- request tracking ------------------------------------------------------------------------
class _State:
    def __init__(self) -> None:
        self.open: dict[str, float] = {}
        self.running: str | None = None
        self.finished = 0
        self.instrumented: list[str] = ["open"]
        self.proxy_module: Any = None

    def n_tokens(self) -> int | None:
        proxy = getattr(self.proxy_module, "_llama_proxy", None)
        model = getattr(proxy, "_current_model", None)
        value = getattr(model, "n_tokens", None)
        return int(value) if isinstance(value, int) else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "open": sorted(self.open),
            "running": self.running,
            "n_tokens": self.n_tokens(),
            "finished": self.finished,
            "instrumented": self.instrumented,
            "pid": os.getpid(),
        }


STATE = _State()


class TrackingApp:
    """ASGI wrapper: answers ``/fingen/state`` itself and tracks ``X-Fingen-Request`` ids."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == STATE_PATH:
            body = json.dumps(STATE.snapshot()).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        rid = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == REQUEST_HEADER),
            None,
        )
        if rid is None:
            await self.app(scope, receive, send)
            return
        token = _request_id.set(rid)
        STATE.open[rid] = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            STATE.open.pop(rid, None)
            STATE.finished += 1
            _request_id.reset(token)


def _track_running(app_module: Any) -> None:
    """Record which request holds the model lock (``get_llama_proxy`` is looked up at call
    time by both chat paths)."""
    original = app_module.get_llama_proxy

    async def get_llama_proxy():  # type: ignore[no-untyped-def]
        async with contextlib.asynccontextmanager(original)() as proxy:
            STATE.running = _request_id.get()
            try:
                yield proxy
            finally:
                STATE.running = None

    app_module.get_llama_proxy = get_llama_proxy
    STATE.instrumented.append("running")


class _Count:
    def __init__(self) -> None:
        self.prompt = 0
        self.generated = 0


_counting: _Count | None = None  # the streamed generation being stepped (one at a time)


def _patch_llama(llama_cls: Any) -> None:
    """Usage on the final streamed chunk, exceptions as error events."""
    original_generate = llama_cls.generate
    original_chat = llama_cls.create_chat_completion

    def generate(self, tokens, *args, **kwargs):  # type: ignore[no-untyped-def]
        count = _counting
        if count is not None:
            count.prompt, count.generated = len(tokens), 0
        inner = original_generate(self, tokens, *args, **kwargs)
        try:
            token = next(inner)
            while True:
                if count is not None:
                    count.generated += 1
                sent = yield token
                token = inner.send(sent)
        except StopIteration:
            return
        finally:
            inner.close()

    def guarded(chunks: Iterator[dict], count: _Count) -> Iterator[dict]:
        global _counting
        try:
            while True:
                _counting = count
                try:
                    chunk = next(chunks)
                finally:
                    _counting = None
                choices = chunk.get("choices") or [{}]
                reason = choices[0].get("finish_reason")
                if reason is not None:
                    generated = count.generated - (1 if reason == "stop" else 0)
                    chunk = {
                        **chunk,
                        "usage": {
                            "prompt_tokens": count.prompt,
                            "completion_tokens": max(0, generated),
                            "total_tokens": count.prompt + max(0, generated),
                        },
                    }
                yield chunk
        except StopIteration:
            return
        except Exception as exc:  # surfaces as an event, not as a cut connection
            _log(f"generation failed: {type(exc).__name__}: {exc}")
            yield {"error": {"message": str(exc), "type": type(exc).__name__}}

    def create_chat_completion(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not kwargs.get("stream"):
            return original_chat(self, *args, **kwargs)
        try:
            chunks = original_chat(self, *args, **kwargs)
        except Exception as exc:
            _log(f"request failed: {type(exc).__name__}: {exc}")
            return iter([{"error": {"message": str(exc), "type": type(exc).__name__}}])
        return guarded(iter(chunks), _Count())

    llama_cls.generate = generate
    llama_cls.create_chat_completion = create_chat_completion
    STATE.instrumented.append("usage")


class _QuietStatePolls(logging.Filter):
    """Keep fingen's frequent state polls out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return STATE_PATH not in str(record.args)


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    watching = start_watchdog()
    from fingen.llm.cpus import competing_servers_warning

    _log(
        f"pid {os.getpid()}, parent {os.getppid()}, "
        f"{'exits when fingen does' if watching else 'no parent watchdog (stdin is no pipe)'}"
    )
    warning = competing_servers_warning()
    if warning:
        _log(f"WARNING: {warning}")

    import llama_cpp
    import uvicorn
    from llama_cpp.server import app as app_module
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    parser = argparse.ArgumentParser(description="fingen's llama.cpp server")
    add_args_from_model(parser, Settings)
    args = parser.parse_args(argv)
    server_settings = parse_model_from_args(ServerSettings, args)
    server_settings.interrupt_requests = False  # a queued request must not end a stream
    model_settings = [parse_model_from_args(ModelSettings, args)]
    app = create_app(server_settings=server_settings, model_settings=model_settings)

    STATE.proxy_module = app_module
    for name, patch in (
        ("running", lambda: _track_running(app_module)),
        ("usage", lambda: _patch_llama(llama_cpp.Llama)),
    ):
        try:
            patch()
        except Exception as exc:  # another llama-cpp-python: serve without this addition
            _log(f"not instrumented ({name}): {type(exc).__name__}: {exc}")
    _log(f"instrumented: {', '.join(STATE.instrumented)}")
    logging.getLogger("uvicorn.access").addFilter(_QuietStatePolls())
    uvicorn.run(
        TrackingApp(app),
        host=server_settings.host,
        port=server_settings.port,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
