"""A scripted OpenAI-compatible HTTP server for tests (aiohttp).

Each ``POST /v1/chat/completions`` takes the next action from (a) a queue consumed in
order, else (b) the first matching rule, else (c) the default action. An action is a dict;
every key is optional and ``{}`` answers 200 with a schema echo::

    status       HTTP status (200). Non-2xx gives an OpenAI error body.
    retry_after  seconds, sent as a ``Retry-After`` header
    error        message of the error body
    content      the message content, sent verbatim (plain text, JSON, anything)
    json         any JSON value, serialised as the content
    schema_echo  true: a minimal valid instance of the request's response_format schema
                 (the default when no content/json/malformed is given)
    malformed    true (a fixed broken-JSON string) or the broken string itself
    truncate     true: cut the content in half, finish_reason "length"
    finish_reason  override ("stop" by default)
    reasoning    text put in ``message.reasoning_content``
    delay        seconds to wait before answering (added to the server's ``latency``)
    headers      extra response headers
    body         raw response body (str or JSON value) instead of a chat completion
    drop         true: close the connection without answering
    usage        overrides of prompt_tokens / completion_tokens
    model        model name in the answer (default: the request's)

A rule is ``{"match": substr | "regex": pattern, "in": "last_user"|"any", "action": {...}
| "actions": [...], "times": N, "per_prompt": bool}``. ``actions`` plays in order, the last
one repeating; ``times`` retires the rule after N uses (so ``{"action": {"status": 500},
"times": 2}`` before a success rule fails twice, then succeeds); ``per_prompt`` keeps those
counters per distinct message list. A rule without match/regex matches every request.

Run in-process with ``with ScriptedServer(actions=..., rules=..., default=...) as srv:`` or
as a process: ``python -m tests.scripted_server --port 0 --script FILE.json [--latency S]
[--port-file PATH]`` (``ServerProcess`` wraps that). Side routes: ``GET /v1/models``,
``GET /health``, ``GET /stats[?requests=0]``, ``POST /reset``, ``POST /script``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Self

from aiohttp import web

from fingen.llm.fake import schema_instance
from tests.scripted_app import build_app, start_runner
from tests.scripted_process import ROOT as ROOT  # re-exported, as before the split
from tests.scripted_process import ServerProcess, main
from tests.scripted_rules import MALFORMED_JSON, Action, Script, fail_then
from tests.scripted_rules import completion_body as completion_body  # re-exported
from tests.scripted_rules import request_schema as request_schema  # re-exported

__all__ = [
    "MALFORMED_JSON",
    "ScriptedServer",
    "ServerProcess",
    "fail_then",
    "schema_instance",
]


class ScriptedServer:
    """The server on its own event loop in a daemon thread, bound to ``host`` on a free port.

    Args:
        actions: queue consumed in order, one action per request.
        rules: rules tried, in order, once the queue is empty.
        default: action used when no rule matches (``{}``: schema echo).
        latency: seconds added to every answer.
    """

    def __init__(
        self,
        actions: list[Action] | None = None,
        rules: list[dict] | None = None,
        default: Action | None = None,
        *,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 1024,
        model: str = "scripted",
    ) -> None:
        self.script = Script(actions, rules, default)
        self.latency, self.host, self.port, self.backlog, self.model = (
            latency,
            host,
            port,
            backlog,
            model,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """One record per chat request: messages, response_format, temperature, seed, ..."""
        with self.script.lock:
            return list(self.script.records)

    @property
    def count(self) -> int:
        return len(self.script.records)

    @property
    def status_counts(self) -> dict[int, int]:
        with self.script.lock:
            return dict(self.script.status_counts)

    def set_script(
        self,
        actions: list[Action] | None = None,
        rules: list[dict] | None = None,
        default: Action | None = None,
        append: bool = False,
    ) -> None:
        """Replace the parts given (``append`` extends the queue/rules instead)."""
        self.script.replace(actions=actions, rules=rules, default=default, append=append)

    def reset(self) -> None:
        self.script.reset()

    def stats(self) -> dict[str, Any]:
        return self.script.stats()

    def wait_for_count(self, n: int, timeout: float = 10.0) -> bool:
        """Block until ``n`` chat requests have arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def start(self) -> ScriptedServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                app = build_app(self.script, self.latency, self.model)
                self._runner = loop.run_until_complete(
                    start_runner(app, self.host, self.port, self.backlog)
                )
                self.port = self._runner.addresses[0][1]
            except BaseException as exc:  # re-raised by start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="scripted-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            future.result(timeout=5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
