"""The engine every method talks to: backend + request cache + usage meter + budget +
structured output with capped re-asks, on one event loop in a background thread.

Sync code (stage functions) submits coroutines with ``engine.submit``; the backend's
connections live on the engine's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from fingen.errors import StructuredOutputError
from fingen.llm.base import Backend, ChatRequest, Completion
from fingen.llm.budget import Budget, estimate_tokens
from fingen.llm.cache import RequestCache, request_key
from fingen.llm.config import BudgetConfig, LLMConfig, PricesConfig
from fingen.llm.structured import ParseFailure, parse_model, reask_message, schema_instruction
from fingen.prompts import localize_schema

__all__ = ["LLMEngine", "StructuredResult", "UsageMeter", "build_engine", "live_stats"]

T = TypeVar("T")
_ENGINES: weakref.WeakSet[LLMEngine] = weakref.WeakSet()  # open root engines, for live_stats
_CURRENT_METER: contextvars.ContextVar[UsageMeter | None] = contextvars.ContextVar(
    "fingen_meter", default=None
)


@dataclass
class UsageMeter:
    """Requests, cache hits, retries, re-asks, tokens and cost of one stage (or a whole run)."""

    requests: int = 0
    cached: int = 0
    transport_retries: int = 0
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    llm_s: float = 0.0  # time with at least one request in flight
    parent: UsageMeter | None = field(default=None, repr=False)

    def add(self, **amounts: float) -> None:
        meter: UsageMeter | None = self
        while meter is not None:
            for name, value in amounts.items():
                setattr(meter, name, getattr(meter, name) + value)
            meter = meter.parent

    def snapshot(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "cached": self.cached,
            "transport_retries": self.transport_retries,
            "reasks": self.reasks,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6),
            "llm_s": round(self.llm_s, 3),
        }


@dataclass
class StructuredResult:
    value: BaseModel
    completion: Completion
    reasks: int


@functools.lru_cache(maxsize=256)
def _schema_of(model: type[BaseModel], lang: str = "en") -> tuple[dict[str, Any], str]:
    """A model's JSON schema and its prompt instruction, computed once per class and language."""
    schema = localize_schema(model.model_json_schema(), lang)
    return schema, schema_instruction(schema, lang)


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fingen-llm")
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class LLMEngine:
    """Cache-aware, budgeted access to one backend. ``for_stage`` gives a metered view."""

    def __init__(
        self,
        backend: Backend,
        config: LLMConfig,
        *,
        cache: RequestCache | None = None,
        meter: UsageMeter | None = None,
        budget: Budget | None = None,
        _loop: _LoopThread | None = None,
        _root: LLMEngine | None = None,
        _stage: str = "",
    ) -> None:
        self.backend = backend
        self.config = config
        self.cache = cache
        self.meter = meter or UsageMeter()
        self._root = _root or self
        self.budget: Budget = (
            _root.budget if _root is not None else budget or Budget(**_limits(config))
        )
        self._in_flight = 0
        self._busy_since = 0.0
        self._loop = _loop or _LoopThread()
        self._stage_meters: dict[str, UsageMeter] = {} if _root is None else _root._stage_meters
        self._prompts: dict[str, dict[str, str]] = {} if _root is None else _root._prompts
        self.stage = _stage
        self._closed = False
        if hasattr(backend, "on_retry") and _root is None:
            backend.on_retry = self._count_retry  # type: ignore[attr-defined]
        if _root is None:  # last: live_stats (the progress thread) reads every attribute
            _ENGINES.add(self)

    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def identity(self) -> str:
        """What answered: backend kind + endpoint/weights + model; part of every cache key."""
        return (
            getattr(self.backend, "identity", None) or f"{self.config.backend}:{self.backend.model}"
        )

    @property
    def concurrency(self) -> int:
        return self.config.concurrency

    def _count_retry(self) -> None:
        (_CURRENT_METER.get() or self.meter).add(transport_retries=1)

    def for_stage(self, name: str) -> LLMEngine:
        """A view whose usage is counted under ``name`` (and in the run's totals)."""
        meter = self._root._stage_meters.get(name)
        if meter is None:
            meter = UsageMeter(parent=self._root.meter)
            self._root._stage_meters[name] = meter
        return LLMEngine(
            self.backend,
            self.config,
            cache=self.cache,
            meter=meter,
            _loop=self._loop,
            _root=self._root,
            _stage=name,
        )

    def live(self) -> dict[str, Any]:
        """What the backend is doing now (queue, tokens/s) when it can tell; else {}."""
        live = getattr(self.backend, "live", None)
        return live() if callable(live) else {}

    def note_prompts(self, prompts: dict[str, str]) -> None:
        """Record the templates (name -> sha256) a task of this view's stage renders."""
        self._prompts.setdefault(self.stage, {}).update(prompts)

    def stage_prompts(self) -> dict[str, dict[str, str]]:
        """Templates used per stage (name -> sha256), from the tasks that ran."""
        return {stage: dict(sorted(p.items())) for stage, p in self._prompts.items()}

    # -- budget -------------------------------------------------------------------------
    def _price(self, prompt_tokens: int, completion_tokens: int) -> float:
        prices: PricesConfig | None = self.config.prices
        if prices is None:
            return 0.0
        return (
            prompt_tokens * prices.input_per_mtok + completion_tokens * prices.output_per_mtok
        ) / 1e6

    def _cost(self, completion: Completion) -> float:
        u = completion.usage
        return self._price(u.prompt_tokens, u.completion_tokens)

    def _enter(self) -> None:
        root = self._root
        if root._in_flight == 0:
            root._busy_since = time.perf_counter()
        root._in_flight += 1

    def _leave(self) -> None:
        root = self._root
        root._in_flight -= 1
        if root._in_flight == 0:
            self.meter.add(llm_s=time.perf_counter() - root._busy_since)

    # -- requests -----------------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> Completion:
        """One completion, from the cache when this exact request already succeeded."""
        key = request_key(self.identity, request) if self.cache is not None else ""
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.meter.add(cached=1)
                return hit
        prompt = sum(estimate_tokens(m.get("content", "")) for m in request.messages)
        held = self.budget.reserve(
            prompt + request.max_tokens, self._price(prompt, request.max_tokens)
        )
        self.meter.add(requests=1)
        _CURRENT_METER.set(self.meter)
        self._enter()
        try:
            completion = await self.backend.complete(request)
        except BaseException:
            self.budget.settle(held)
            raise
        finally:
            self._leave()
        u = completion.usage
        cost = self._cost(completion)
        self.budget.settle(held, u.prompt_tokens + u.completion_tokens, cost)
        if self.cache is not None:
            self.cache.put(key, completion)
        self.meter.add(
            prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, cost=cost
        )
        return completion

    async def structured(
        self, request: ChatRequest, model: type[BaseModel], *, lang: str = "en"
    ) -> StructuredResult:
        """A reply validated against ``model``; re-asks with the error, at most ``max_reasks``.

        Raises StructuredOutputError with reason ``truncated``, ``invalid_json`` or
        ``schema_mismatch`` and the raw text when the reply still does not fit. The failed
        attempts are not kept in the cache: running again asks again.
        """
        schema, instruction = _schema_of(model, lang)
        messages = list(request.messages)
        if self.config.schema_in_prompt:
            last = messages[-1]
            messages[-1] = {**last, "content": last["content"] + "\n\n" + instruction}
        req = request.model_copy(update={"json_schema": schema, "schema_name": model.__name__})
        sent: list[ChatRequest] = []
        try:
            return await self._structured_attempts(req, messages, model, lang, sent)
        except StructuredOutputError:
            self.forget(*sent)
            raise

    def forget(self, *requests: ChatRequest) -> None:
        """Drop the cached answers of ``requests`` (failed replies are re-asked next run)."""
        if self.cache is not None and requests:
            self.cache.delete([request_key(self.identity, r) for r in requests])

    async def _structured_attempts(
        self,
        req: ChatRequest,
        messages: list[dict[str, str]],
        model: type[BaseModel],
        lang: str,
        sent: list[ChatRequest],
    ) -> StructuredResult:
        request = req
        for attempt in range(self.config.max_reasks + 1):
            sent.append(req.model_copy(update={"messages": messages}))
            completion = await self.chat(sent[-1])
            if completion.finish_reason == "length":
                raise StructuredOutputError(
                    "truncated",
                    raw=completion.text,
                    attempts=attempt + 1,
                    detail=f"reply hit max_tokens={request.max_tokens}",
                )
            try:
                return StructuredResult(parse_model(completion.text, model), completion, attempt)
            except ParseFailure as failure:
                if attempt == self.config.max_reasks:
                    raise StructuredOutputError(
                        failure.reason,
                        raw=completion.text,
                        attempts=attempt + 1,
                        detail=failure.detail,
                    ) from None
                self.meter.add(reasks=1)
                messages = [
                    *messages,
                    {"role": "assistant", "content": completion.text},
                    reask_message(failure, lang),
                ]
        raise AssertionError("unreachable")  # pragma: no cover

    # -- running coroutines from sync code ------------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def stage_usage(self) -> dict[str, dict[str, float]]:
        return {name: m.snapshot() for name, m in self._root._stage_meters.items()}

    def sibling(self, config: LLMConfig) -> LLMEngine:
        """Another root engine on this one's backend, loop, cache and budget, with its own
        settings (sampling, prices) and meters: two named models that are the same server or
        weights share one connection pool (one embedded llama.cpp server, not two)."""
        root = LLMEngine(
            self.backend, config, cache=self.cache, budget=self.budget, _loop=self._loop
        )
        root._owner = self
        return root

    def close(self) -> None:
        """Close connections and the backend (idempotent); views and siblings close nothing
        (the engine that owns the backend does)."""
        if self._root is not self or self._closed:
            return
        self._closed = True
        if getattr(self, "_owner", None) is not None:
            return
        try:
            self.run(_cancel_leftovers())
            self.run(self.backend.aclose())
        finally:
            self._loop.stop()
            if self.cache is not None:
                self.cache.close()

    def __enter__(self) -> LLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _cancel_leftovers(timeout_s: float = 5.0) -> None:
    """Cancel what a stopped stage left running on the loop (an interrupted ``run_task``)
    and let it unwind while the loop runs: no task is destroyed pending at exit."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s)


def live_stats() -> dict[str, Any]:
    """What the open engines are doing now: requests in flight, the embedded server's queue
    and tokens/s, and warnings (e.g. another llama.cpp server on the same cores)."""
    out: dict[str, Any] = {"in_flight": 0, "queued": 0, "tokens_per_s": 0.0, "warnings": []}
    seen: set[int] = set()
    for engine in list(_ENGINES):
        if engine._closed:
            continue
        out["in_flight"] += engine._in_flight
        if id(engine.backend) in seen:  # siblings share one backend
            continue
        seen.add(id(engine.backend))
        live = engine.live()
        out["queued"] += int(live.get("queued", 0))
        out["tokens_per_s"] += float(live.get("tokens_per_s", 0.0))
        if warning := getattr(engine.backend, "warning", None):
            out["warnings"].append(warning)
    return out


def _limits(config: LLMConfig) -> dict[str, Any]:
    b: BudgetConfig | None = config.budget
    return {} if b is None else {"max_tokens": b.max_tokens, "max_cost": b.max_cost}


def build_engine(
    config: LLMConfig, *, cache_path: str | Path | None = None, budget: Budget | None = None
) -> LLMEngine:
    """Create the backend named by ``config.backend`` and wrap it in an engine.

    ``budget`` is shared by the engines of one run (default: ``config.budget`` alone).
    """
    from fingen.llm.registry import create_backend

    backend = create_backend(config)
    # Fake answers are never cached: a dry run must not leave answers a real run would reuse.
    use_cache = cache_path is not None and config.cache and config.backend != "fake"
    cache = RequestCache(cache_path) if use_cache else None
    return LLMEngine(backend, config, cache=cache, budget=budget)
