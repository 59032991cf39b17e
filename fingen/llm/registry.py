"""Backend factory: a dict registry with lazy imports (no if-chain, no heavy import at start)."""

from __future__ import annotations

import os
from collections.abc import Callable

from fingen.errors import ConfigError
from fingen.llm.base import Backend
from fingen.llm.config import LLMConfig
from fingen.redact import register_secret_env

__all__ = ["BACKENDS", "check_reachable", "create_backend", "resolve_api_key"]


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


def _openai(config: LLMConfig) -> Backend:
    from fingen.llm.client import OpenAICompatBackend

    assert config.base_url is not None
    check_reachable(config.base_url)
    return OpenAICompatBackend(
        base_url=config.base_url,
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


def _local(config: LLMConfig) -> Backend:
    from fingen.llm.local import create_local_backend

    return create_local_backend(config)


def _vllm(config: LLMConfig) -> Backend:
    from fingen.llm.vllm_engine import create_vllm_backend

    return create_vllm_backend(config)


def _fake(config: LLMConfig) -> Backend:
    from fingen.llm.fake import FakeBackend, load_handler

    handler = load_handler(config.fake.handler) if config.fake.handler else None
    return FakeBackend(handler, responses=config.fake.responses, model=config.model or "fake")


BACKENDS: dict[str, Callable[[LLMConfig], Backend]] = {
    "openai": _openai,
    "local": _local,
    "vllm": _vllm,
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
