"""A scripted OpenAI-compatible HTTP server for tests and benchmarks (aiohttp).

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

import argparse
import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from fingen.llm.fake import schema_instance

__all__ = [
    "MALFORMED_JSON",
    "ScriptedServer",
    "ServerProcess",
    "fail_then",
    "schema_instance",
]

MALFORMED_JSON = '{"answer": "unterminated, "items": [1, 2,'
ROOT = Path(__file__).resolve().parents[1]
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
}
_ERROR_TYPES |= {429: "rate_limit_error"}
Action = dict[str, Any]


def fail_then(n: int, failure: Action | None = None, success: Action | None = None) -> list[Action]:
    """``n`` failures (default 500) then a success (default schema echo), for ``actions``."""
    return [dict(failure or {"status": 500})] * n + [dict(success or {})]


# --- schema echo -------------------------------------------------------------------------


def request_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks for (json_schema, json_object+schema, guided_json)."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    if fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    guided = body.get("guided_json")
    return json.loads(guided) if isinstance(guided, str) else guided


# --- script state --------------------------------------------------------------------------


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


class Script:
    """Queue, rules, default, counters and request records; thread-safe."""

    def __init__(
        self,
        actions: list[Action] | None,
        rules: list[dict[str, Any]] | None,
        default: Action | None,
    ) -> None:
        self.lock = threading.Lock()
        self.queue: list[Action] = []
        self.rules: list[dict[str, Any]] = []
        self.default: Action = {}
        self.replace(actions=actions or [], rules=rules or [], default=default or {})
        self.reset()

    def replace(
        self,
        *,
        actions: list[Action] | None = None,
        rules: list[dict] | None = None,
        default: Action | None = None,
        append: bool = False,
    ) -> None:
        """Replace (or extend, with ``append``) the parts given; ``None`` leaves one as is."""
        with self.lock:
            if actions is not None:
                self.queue = [*self.queue, *actions] if append else list(actions)
            if rules is not None:
                self.rules = [*self.rules, *rules] if append else list(rules)
                self.rule_uses: Counter[Any] = Counter()
            if default is not None:
                self.default = dict(default)

    def reset(self) -> None:
        """Forget requests, counts and rule uses (the script stays)."""
        with self.lock:
            self.records: list[dict[str, Any]] = []
            self.status_counts: Counter[int] = Counter()
            self.rule_uses = Counter()

    def choose(self, body: dict[str, Any]) -> tuple[Action, dict[str, Any]]:
        """Pick the action for one request and record the request."""
        messages = body.get("messages") or []
        with self.lock:
            source, action = "default", self.default
            if self.queue:
                source, action = "queue", self.queue.pop(0)
            else:
                for i, rule in enumerate(self.rules):
                    picked = self._apply(i, rule, messages)
                    if picked is not None:
                        source, action = f"rule{i}", picked
                        break
            record = {
                "index": len(self.records),
                "model": body.get("model"),
                "messages": messages,
                "response_format": body.get("response_format"),
                "temperature": body.get("temperature"),
                "seed": body.get("seed"),
                "max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
                "body": body,
                "source": source,
                "status": None,
                "time": time.time(),
            }
            self.records.append(record)
        return action, record

    def _apply(self, i: int, rule: dict[str, Any], messages: list[dict]) -> Action | None:
        if "match" in rule or "regex" in rule:
            if rule.get("in", "last_user") == "any":
                haystack = "\n".join(_text(m) for m in messages)
            else:
                users = [m for m in messages if m.get("role") == "user"]
                haystack = _text(users[-1]) if users else ""
            if "match" in rule and rule["match"] not in haystack:
                return None
            if "regex" in rule and not re.search(rule["regex"], haystack):
                return None
        key = (i, json.dumps(messages, sort_keys=True)) if rule.get("per_prompt") else i
        uses = self.rule_uses[key]
        if rule.get("times") is not None and uses >= rule["times"]:
            return None
        self.rule_uses[key] = uses + 1
        if "actions" in rule:
            return rule["actions"][min(uses, len(rule["actions"]) - 1)]
        return rule.get("action", {})

    def finish(self, record: dict[str, Any], status: int) -> None:
        with self.lock:
            record["status"] = status
            self.status_counts[status] += 1

    def stats(self, with_requests: bool = True) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {
                "count": len(self.records),
                "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
                "queue_left": len(self.queue),
            }
            if with_requests:
                out["requests"] = [dict(r) for r in self.records]
        return out


# --- HTTP --------------------------------------------------------------------------------


def completion_body(action: Action, body: dict[str, Any], n: int) -> tuple[dict[str, Any], str]:
    """The OpenAI chat.completion body for a 2xx action, and its content."""
    if "content" in action:
        content = str(action["content"])
    elif "json" in action:
        content = json.dumps(action["json"])
    elif action.get("malformed"):
        content = action["malformed"] if isinstance(action["malformed"], str) else MALFORMED_JSON
    else:
        schema = request_schema(body)
        content = json.dumps(schema_instance(schema) if schema else {})
    finish = action.get("finish_reason", "stop")
    if action.get("truncate"):
        content, finish = (
            content[: len(content) // 2],
            action.get("finish_reason", "length"),
        )
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if "reasoning" in action:
        message["reasoning_content"] = action["reasoning"]
    prompt = sum(len(_text(m)) for m in body.get("messages") or []) // 4 + 1
    usage = {"prompt_tokens": prompt, "completion_tokens": len(content) // 4 + 1}
    usage |= action.get("usage", {})
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": f"chatcmpl-scripted{n:08d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": action.get("model", body.get("model") or "scripted"),
        "system_fingerprint": "fp_scripted",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }, content


def build_app(script: Script, latency: float = 0.0, model: str = "scripted") -> web.Application:
    """The aiohttp application serving ``script``."""

    async def chat(request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = {}
        action, record = script.choose(body)
        delay = latency + float(action.get("delay", 0.0))
        if delay > 0:
            await asyncio.sleep(delay)
        status = int(action.get("status", 200))
        headers = {str(k): str(v) for k, v in action.get("headers", {}).items()}
        if "retry_after" in action:
            headers["Retry-After"] = f"{action['retry_after']:g}"
        if action.get("drop"):
            script.finish(record, 0)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp treats this as a lost connection
        if "body" in action:
            raw = action["body"]
            text = raw if isinstance(raw, str) else json.dumps(raw)
            ctype = "text/plain" if isinstance(raw, str) else "application/json"
        elif status >= 300:
            kind = _ERROR_TYPES.get(status, "server_error")
            err = {"message": action.get("error", f"scripted {status}"), "type": kind}
            text, ctype = (
                json.dumps({"error": err | {"param": None, "code": status}}),
                "application/json",
            )
        else:
            payload, _ = completion_body(action, body, record["index"])
            text, ctype = json.dumps(payload), "application/json"
        script.finish(record, status)
        return web.Response(status=status, text=text, content_type=ctype, headers=headers)

    async def models(_: web.Request) -> web.Response:
        item = {"id": model, "object": "model", "created": 0, "owned_by": "scripted"}
        return web.json_response({"object": "list", "data": [item]})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(script.stats(request.query.get("requests", "1") != "0"))

    async def reset(_: web.Request) -> web.Response:
        script.reset()
        return web.json_response({"ok": True})

    async def set_script(request: web.Request) -> web.Response:
        new = await request.json()
        parts = {k: new.get(k) for k in ("actions", "rules", "default")}
        script.replace(**parts, append=bool(new.get("append")))
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/script", set_script)
    return app


async def _start(app: web.Application, host: str, port: int, backlog: int) -> web.AppRunner:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=backlog).start()
    return runner


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
                    _start(app, self.host, self.port, self.backlog)
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


# --- separate process ------------------------------------------------------------------------


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
    runner = await _start(app, args.host, args.port, args.backlog)
    port = runner.addresses[0][1]
    if args.port_file:
        tmp = Path(f"{args.port_file}.tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)  # atomic: a reader never sees a partial port
    print(port, flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve a script file until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--script", help='JSON file: {"actions": [], "rules": [], "default": {}}')
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument("--port-file", help="write the bound port here (atomically)")
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
