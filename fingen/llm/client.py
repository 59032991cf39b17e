"""Async OpenAI-compatible chat client (vLLM server, hosted APIs, the embedded llama.cpp server).

Built on aiohttp rather than the ``openai`` SDK: bench/llm_overhead.py measured the SDK's
per-request CPU cost as the bottleneck at high concurrency. Transport retries (429, 5xx,
timeouts, connection errors) honour ``Retry-After`` with exponential backoff via tenacity.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from fingen.errors import BackendRejected, TransportError
from fingen.llm.base import ChatRequest, Completion, SchemaStyle, Usage
from fingen.llm.limits import RateLimiter

__all__ = ["OpenAICompatBackend", "response_format_for"]

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_FATAL_STATUS = {401, 403, 404}


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def response_format_for(style: SchemaStyle, name: str, schema: dict[str, Any]) -> dict | None:
    """The ``response_format`` body field each kind of server accepts."""
    if style == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    if style == "json_object_schema":  # llama.cpp: json_schema -> HTTP 500
        return {"type": "json_object", "schema": schema}
    if style == "json_object":
        return {"type": "json_object"}
    return None


def _split_userinfo(url: str) -> tuple[str, aiohttp.BasicAuth | None]:
    """``url`` without ``user:password@``, and those credentials (None when there are none)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    auth = aiohttp.BasicAuth(unquote(user), unquote(password))
    return urlunsplit(parts._replace(netloc=host)), auth


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class OpenAICompatBackend:
    """Transport to one ``/chat/completions`` endpoint with limits and retries."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 8,
        rpm: int | None = None,
        tpm: int | None = None,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        timeout_s: float = 120.0,
        schema_style: SchemaStyle = "json_schema",
        extra_body: dict[str, Any] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        url, basic = _split_userinfo(base_url.rstrip("/"))
        self.url = url + "/chat/completions"
        self.model = model
        self.identity = f"openai:{base_url.rstrip('/')}:{model}"
        self.schema_style: SchemaStyle = schema_style
        self._headers = {"Content-Type": "application/json"}
        # Credentials in the URL (http://user:pass@host) become a Basic header; an API key
        # wins (aiohttp refuses a request with both, and messages name the URL without them).
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        elif basic is not None:
            self._headers["Authorization"] = basic.encode()
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.extra_body = dict(extra_body or {})
        self.limiter = RateLimiter(rpm, tpm)
        self.on_retry = on_retry
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None

    def _body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
        }
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stop:
            body["stop"] = req.stop
        if req.json_schema is not None:
            fmt = response_format_for(self.schema_style, req.schema_name, req.json_schema)
            if fmt is not None:
                body["response_format"] = fmt
        body.update(self.extra_body)
        body.update(req.extra)
        return body

    def _delay(self, attempt: int, exc: BaseException | None) -> float:
        """Exponential backoff after failed attempt ``attempt``, at least the Retry-After hint."""
        backoff = self.backoff_s * (2 ** (attempt - 1))
        hint = getattr(exc, "retry_after", None)
        return min(60.0, max(backoff, hint or 0.0))

    async def _attempt(self, data: bytes, tokens: int) -> Completion:
        if self.limiter.active:
            await self.limiter.acquire(tokens)
        assert self._sem is not None
        async with self._sem:
            return await self._post(data)

    async def complete(self, request: ChatRequest) -> Completion:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
            self._sem = asyncio.Semaphore(self.concurrency)
        data = json.dumps(self._body(request), ensure_ascii=False).encode("utf-8")
        estimate = sum(len(m.get("content", "")) for m in request.messages) // 4
        try:  # fast path: one attempt, no retry machinery
            return await self._attempt(data, estimate + request.max_tokens)
        except _Retryable as first:
            if self.max_retries == 0:
                raise TransportError(
                    f"{first} (no retries configured)", status=first.status, attempts=1
                ) from None
            if self.on_retry:
                self.on_retry()
            await asyncio.sleep(self._delay(1, first))
        attempts = 1

        def before_sleep(_: RetryCallState) -> None:
            if self.on_retry:
                self.on_retry()

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_retries),
                wait=lambda state: self._delay(
                    state.attempt_number + 1, state.outcome.exception() if state.outcome else None
                ),
                retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    return await self._attempt(data, estimate + request.max_tokens)
        except _Retryable as exc:
            raise TransportError(
                f"{exc} (gave up after {attempts} attempts)", status=exc.status, attempts=attempts
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, data: bytes) -> Completion:
        assert self._session is not None
        try:
            async with self._session.post(self.url, data=data, headers=self._headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    text = raw[:300].decode("utf-8", "replace")
                    msg = f"HTTP {resp.status} from {self.url}: {text}"
                    if resp.status in _RETRY_STATUS:
                        raise _Retryable(msg, resp.status, _retry_after(resp.headers))
                    if resp.status in _FATAL_STATUS:  # every request would fail the same way
                        raise BackendRejected(
                            f"{msg} (check llm.base_url, llm.model and the API key)",
                            status=resp.status,
                        )
                    raise TransportError(msg, status=resp.status, attempts=1)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Retryable(f"connection error: {exc!r}") from None
        except TimeoutError:
            raise _Retryable(f"timed out after {self.timeout.total}s") from None
        return _parse_completion(raw, self.model)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _parse_completion(raw: bytes, model: str) -> Completion:
    try:
        body = json.loads(raw)
        choice = body["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _Retryable(f"malformed response body: {raw[:200]!r} ({exc})") from None
    usage = body.get("usage") or {}
    return Completion(
        text=message.get("content") or "",
        reasoning=message.get("reasoning_content") or message.get("reasoning"),
        finish_reason=choice.get("finish_reason") or "stop",
        usage=Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        ),
        model=body.get("model") or model,
    )
