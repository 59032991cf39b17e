"""Backend factory: a dict registry with lazy imports (no if-chain, no heavy import at start).

``llm.base_url`` may name a fleet (a list of endpoints serving one model): ``FleetBackend``
sends each request to the endpoint with the fewest requests in flight and moves a request
whose endpoint keeps failing to the next one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from fingen.errors import ConfigError, TransportError
from fingen.llm.base import Backend, ChatRequest, Completion, SchemaStyle
from fingen.llm.config import LLMConfig
from fingen.redact import redact, register_secret_env

__all__ = [
    "BACKENDS",
    "FleetBackend",
    "check_reachable",
    "create_backend",
    "resolve_api_key",
]


def resolve_api_key(config: LLMConfig) -> str | None:
    """The API key from the environment variable *named* in the config (never the key itself)."""
    if not config.api_key_env:
        return None
    register_secret_env(config.api_key_env)  # its value is redacted from every message
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ConfigError(
            f"environment variable {config.api_key_env} is not set", where="llm.api_key_env"
        )
    return key


def check_reachable(base_url: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one clear line, when nothing listens at ``base_url``."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"'{base_url}' is not an http(s) URL", where="llm.base_url")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot connect to {parts.hostname}:{port} ({reason})", where="llm.base_url"
        ) from None


class FleetBackend:
    """One model behind several OpenAI-compatible endpoints, balanced by requests in flight.

    At most ``concurrency`` requests are in flight over the whole fleet; each goes to the
    endpoint with the fewest in flight (ties: round robin from a per-process offset, so the
    actors of a Ray stage start on different endpoints). An endpoint that still fails after
    its own transport retries hands the request to the next endpoint not yet tried; a 4xx
    answer (the request's fault, not the endpoint's) is final. The fleet's cache identity is
    the model's, so endpoints may come and go without invalidating the request cache.
    """

    def __init__(
        self,
        members: list[Any],
        *,
        model: str,
        concurrency: int,
        offset: int | None = None,
        warning: str | None = None,
    ) -> None:
        if not members:
            raise ValueError("a fleet needs at least one endpoint")
        self.members = members
        self.model = model
        self.identity = f"openai:fleet:{model}"
        self.schema_style: SchemaStyle = members[0].schema_style
        self.concurrency = concurrency
        self.in_flight = [0] * len(members)
        self.sent = [0] * len(members)
        self.failed_over = 0
        self.warning = warning
        self._next = (os.getpid() if offset is None else offset) % len(members)
        self._sem: asyncio.Semaphore | None = None
        self._on_retry: Callable[[], None] | None = None

    @property
    def on_retry(self) -> Callable[[], None] | None:
        return self._on_retry

    @on_retry.setter
    def on_retry(self, callback: Callable[[], None] | None) -> None:
        self._on_retry = callback
        for m in self.members:
            m.on_retry = callback

    def _pick(self, tried: set[int]) -> int:
        n = len(self.members)
        order = [(self._next + j) % n for j in range(n)]
        best = min((i for i in order if i not in tried), key=lambda i: self.in_flight[i])
        self._next = (best + 1) % n
        return best

    async def complete(self, request: ChatRequest) -> Completion:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        tried: set[int] = set()
        async with self._sem:
            while True:
                i = self._pick(tried)
                self.in_flight[i] += 1
                self.sent[i] += 1
                try:
                    return await self.members[i].complete(request)  # type: ignore[no-any-return]
                except TransportError as exc:
                    tried.add(i)
                    client_fault = exc.status is not None and 400 <= exc.status < 500
                    if client_fault and exc.status not in (408, 409, 425, 429):
                        raise
                    if len(tried) == len(self.members):
                        raise
                    self.failed_over += 1
                finally:
                    self.in_flight[i] -= 1

    def live(self) -> dict[str, Any]:
        return {
            "endpoints": len(self.members),
            "in_flight_per_endpoint": list(self.in_flight),
            "sent_per_endpoint": list(self.sent),
            "failed_over": self.failed_over,
        }

    async def aclose(self) -> None:
        for m in self.members:
            await m.aclose()


def _openai_member(config: LLMConfig, base_url: str) -> Backend:
    from fingen.llm.client import OpenAICompatBackend

    return OpenAICompatBackend(
        base_url=base_url,
        model=config.model or "default",
        api_key=resolve_api_key(config),
        concurrency=config.concurrency,
        rpm=config.rpm,
        tpm=config.tpm,
        max_retries=config.max_retries,
        backoff_s=config.backoff_s,
        timeout_s=config.timeout_s,
        schema_style=config.schema_style or "json_schema",
        extra_body=config.extra_body,
    )


def _openai(config: LLMConfig) -> Backend:
    urls = config.base_urls
    assert urls
    if len(urls) == 1:
        check_reachable(urls[0])
        return _openai_member(config, urls[0])
    up, down = [], []
    for url in urls:
        try:
            check_reachable(url)
            up.append(url)
        except ConfigError as exc:
            down.append(redact(str(exc).removeprefix("llm.base_url: ")))
    if not up:
        raise ConfigError(
            f"no endpoint of the fleet answers ({'; '.join(down)})", where="llm.base_url"
        )
    warning = f"fleet: {len(down)} of {len(urls)} endpoints unreachable ({'; '.join(down)})"
    return FleetBackend(  # type: ignore[return-value]
        [_openai_member(config, u) for u in up],
        model=config.model or "default",
        concurrency=config.concurrency,
        warning=warning if down else None,
    )


def _local(config: LLMConfig) -> Backend:
    from fingen.llm.local import create_local_backend

    return create_local_backend(config)


def _vllm(config: LLMConfig) -> Backend:
    from fingen.llm.vllm_engine import create_vllm_backend

    return create_vllm_backend(config)


def _ray_llm(config: LLMConfig) -> Backend:
    from fingen.llm.ray_llm import create_deferred_backend

    return create_deferred_backend(config)


def _fake(config: LLMConfig) -> Backend:
    from fingen.llm.fake import FakeBackend, load_handler

    handler = load_handler(config.fake.handler) if config.fake.handler else None
    return FakeBackend(handler, responses=config.fake.responses, model=config.model or "fake")


BACKENDS: dict[str, Callable[[LLMConfig], Backend]] = {
    "openai": _openai,
    "local": _local,
    "vllm": _vllm,
    "ray_llm": _ray_llm,
    "fake": _fake,
}


def create_backend(config: LLMConfig) -> Backend:
    """Instantiate the backend named by ``config.backend``."""
    try:
        factory = BACKENDS[config.backend]
    except KeyError:
        raise ConfigError(
            f"unknown backend '{config.backend}'; choose from {sorted(BACKENDS)}"
        ) from None
    return factory(config)
