"""The scripted server's aiohttp application (chat completions and side routes)."""

from __future__ import annotations

import asyncio
import json
import socket

from aiohttp import web

from tests.scripted_rules import Script, completion_body

__all__ = ["build_app", "start_runner"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
}
_ERROR_TYPES |= {429: "rate_limit_error"}


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


async def start_runner(app: web.Application, host: str, port: int, backlog: int) -> web.AppRunner:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=backlog).start()
    return runner
