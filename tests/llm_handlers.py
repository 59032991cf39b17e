"""FakeBackend handlers and helpers shared by the method and stage tests (no HTTP involved).

A handler is a plain ``request -> reply`` function (see ``fingen.llm.fake``): it reads the
prompt (``last_user``) and returns the text, JSON value or ``Completion`` a model would.
Pipelines name a handler by import path; ``installed(handler)`` lends any callable (a closure
over a test's table, say) the path ``tests.llm_handlers:active`` for one ``with`` block, so
stage tests go through the same ``llm: {backend: fake, fake: {handler: ...}}`` configuration
as a YAML pipeline. Transport behaviour (429, 5xx, drops, HTTP-level garbage) stays with the
scripted server in ``tests/test_llm_engine.py``, ``test_scripted_server.py`` and
``test_resume.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from fingen.errors import TransportError
from fingen.llm.base import ChatRequest, Completion, Usage
from fingen.llm.cache import RequestCache
from fingen.llm.config import LLMConfig
from fingen.llm.engine import LLMEngine
from fingen.llm.fake import FakeBackend, Handler
from tests.fake_handlers import last_user

__all__ = [
    "HANDLER",
    "MALFORMED",
    "Recorder",
    "active",
    "every_text",
    "fake_engine",
    "fake_llm",
    "installed",
    "judge_table",
    "last_user",
    "refuse",
    "reply",
    "truncated",
]

HANDLER = "tests.llm_handlers:active"
MALFORMED = '{"rationale": "unterminated, "score": [1, 2,'  # what a model may send: no JSON

_installed: list[Handler] = []


def active(request: ChatRequest) -> Any:
    """The handler a pipeline names as ``HANDLER``: the innermost ``installed`` one."""
    if not _installed:
        raise RuntimeError(f"{HANDLER} answers only inside `with installed(handler):`")
    return _installed[-1](request)


@contextmanager
def installed(handler: Handler) -> Iterator[str]:
    """Make ``handler`` answer for ``HANDLER`` inside the block; yields that import path."""
    _installed.append(handler)
    try:
        yield HANDLER
    finally:
        _installed.pop()


def fake_llm(path: str = HANDLER, **more: Any) -> dict[str, Any]:
    """A pipeline's ``llm`` block: the fake backend answering from the handler at ``path``."""
    return {"backend": "fake", "fake": {"handler": path}, **more}


def fake_engine(
    handler: Handler, *, model: str = "fake", cache_path: str | Path | None = None, **config: Any
) -> LLMEngine:
    """An engine on ``FakeBackend(handler)``. ``build_engine`` never caches fake answers; with
    ``cache_path`` this one caches like a real run, for tests of what a re-run pays for."""
    cfg = LLMConfig(backend="fake", model=model, **config)
    cache = RequestCache(cache_path) if cache_path is not None else None
    return LLMEngine(FakeBackend(handler, model=model), cfg, cache=cache)


class Recorder:
    """A handler that keeps every request it answers (``requests``, ``count``)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[ChatRequest] = []

    def __call__(self, request: ChatRequest) -> Any:
        self.requests.append(request)
        return self.handler(request)

    @property
    def count(self) -> int:
        return len(self.requests)


def every_text(request: ChatRequest) -> str:
    """All messages of a request (re-asks included), one after the other."""
    return "\n".join(m.get("content", "") for m in request.messages)


def reply(text: str, *, finish_reason: str = "stop", reasoning: str | None = None) -> Completion:
    """A full completion; its completion tokens counted as the fake backend counts them."""
    usage = Usage(completion_tokens=len(text) // 4)
    return Completion(text=text, reasoning=reasoning, finish_reason=finish_reason, usage=usage)


def truncated(text: str) -> Completion:
    """The first half of ``text``, cut off by max_tokens (``finish_reason="length"``)."""
    return reply(text[: len(text) // 2], finish_reason="length")


def refuse(message: str = "bad request") -> NoReturn:
    """Fail the request as a backend does when the server refuses it (HTTP 400; the mapping
    of HTTP statuses to errors is ``tests/test_llm_engine.py``'s business)."""
    raise TransportError(f"HTTP 400: {message}", status=400, attempts=1)


def judge_table(table: dict[tuple[str, str], int], default: int = 0) -> Handler:
    """A relevance judge: the grade of the first (query substring, passage substring) pair
    that appears, in that order, in the prompt; ``default`` for any other pair."""
    rules = [
        (re.compile(re.escape(q) + r"[\s\S]*" + re.escape(p)), score)
        for (q, p), score in table.items()
    ]

    def judge(request: ChatRequest) -> dict[str, Any]:
        prompt = last_user(request)
        for pattern, score in rules:
            if pattern.search(prompt):
                return {"rationale": f"graded {score} by rule", "score": score}
        return {"rationale": "unrelated", "score": default}

    return judge
