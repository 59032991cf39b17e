"""LLM tasks: build messages for one item, parse one reply; ``run_task`` runs them concurrently.

A task subclasses :class:`LLMTask`: a response model, a prompt template loaded once at
construction, and two pure methods (curator's prompt/parse/response_format)::

    class MyTask(LLMTask[Passage, Query]):
        name = "my_task"
        response_model = MyReply            # None for free text
        def item_id(self, item) -> str: ...
        def build(self, item) -> list[dict]: ...     # chat messages (self.render(...))
        def parse(self, item, reply, completion) -> list[Record | Failure]: ...

Optional hooks have defaults: ``request_params`` (per-item sampling overrides),
``refuse`` (an item failed without a request, e.g. too short), ``accept_truncated``.
``parse`` may raise ``RowRejected`` to reject the whole item, or return ``Failure`` records
among its outputs to reject single rows; both are counted, never silently dropped.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from fingen.errors import BudgetExceeded, RowRejected, StructuredOutputError, TransportError
from fingen.llm.base import ChatRequest, Completion
from fingen.llm.engine import LLMEngine
from fingen.prompts import PromptTemplate, load_prompt
from fingen.records import Failure

__all__ = ["LLMTask", "RowRejected", "TaskResult", "run_task"]

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")


class LLMTask(Generic[ItemT, OutT]):
    """Base of every LLM task: everything a task may have, with defaults.

    Args:
        lang: prompt language (``<template>.<lang>.jinja``).
        template: the prompt template's name (default: the class's ``template``).
    """

    name: ClassVar[str] = "task"
    template: ClassVar[str] = ""
    response_model: ClassVar[type[BaseModel] | None] = None
    accept_truncated: ClassVar[bool] = False  # keep replies that hit max_tokens

    def __init__(self, *, lang: str = "en", template: str | None = None) -> None:
        self.lang = lang
        name = self.template if template is None else template
        self.prompt: PromptTemplate | None = load_prompt(name, lang) if name else None

    @property
    def prompts(self) -> dict[str, str]:
        """sha256 of every template this task renders, by file name (for the manifest)."""
        return {self.prompt.name: self.prompt.sha256} if self.prompt else {}

    @property
    def prompt_hash(self) -> str:
        """The template's short sha256 (part of ``Query.origin``), "" without a template."""
        return self.prompt.short_hash if self.prompt else ""

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """The task's template rendered to chat messages (in the Jinja sandbox)."""
        if self.prompt is None:
            raise TypeError(f"{type(self).__name__} has no prompt template")
        return self.prompt.render(**variables)

    def item_id(self, item: ItemT) -> str:
        raise NotImplementedError

    def build(self, item: ItemT) -> list[dict[str, str]]:
        raise NotImplementedError

    def parse(self, item: ItemT, reply: Any, completion: Completion) -> list[OutT | Failure]:
        raise NotImplementedError

    def request_params(self, item: ItemT) -> dict[str, Any]:
        """Per-item overrides of the request (temperature, max_tokens, seed, sample_idx)."""
        return {}

    def refuse(self, item: ItemT) -> tuple[str, str] | None:
        """``(reason, detail)`` when the item fails without a request, else None."""
        return None


@dataclass
class TaskResult(Generic[ItemT, OutT]):
    """What one item gave: records, and failures (the whole item's, or rejected rows).

    ``skipped`` names why an item was not eligible at all (not an input, not a failure);
    ``counts`` tallies work done for the item (e.g. candidates judged), summed per stage.
    """

    item: ItemT
    item_id: str
    records: list[OutT] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    ok: bool = True  # the model answered and the reply parsed
    cached: bool = False
    completion: Completion | None = None
    skipped: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _request(task: LLMTask, item: Any, llm: LLMEngine) -> ChatRequest:
    params: dict[str, Any] = {
        "temperature": llm.config.temperature,
        "max_tokens": llm.config.max_tokens,
    }
    params.update(task.request_params(item))
    return ChatRequest(messages=task.build(item), **params)


async def _run_one(task: LLMTask, item: Any, llm: LLMEngine) -> TaskResult:
    item_id = task.item_id(item)
    result: TaskResult = TaskResult(item=item, item_id=item_id)

    def fail(reason: str, detail: str = "", raw: str = "") -> TaskResult:
        result.ok = False
        result.failures.append(
            Failure(stage=task.name, item_id=item_id, reason=reason, detail=detail[:2000], raw=raw)
        )
        return result

    if (refused := task.refuse(item)) is not None:
        return fail(*refused)
    try:
        request = _request(task, item, llm)
        if task.response_model is not None:
            structured = await llm.structured(request, task.response_model, lang=task.lang)
            reply: Any = structured.value
            completion = structured.completion
        else:
            completion = await llm.chat(request)
            reply = completion.text
            if completion.finish_reason == "length" and not task.accept_truncated:
                llm.forget(request)  # a re-run asks again (e.g. with more max_tokens)
                return fail("truncated", f"hit max_tokens={request.max_tokens}", completion.text)
        result.completion, result.cached = completion, completion.cached
        for out in task.parse(item, reply, completion):
            (result.failures if isinstance(out, Failure) else result.records).append(out)
    except StructuredOutputError as exc:
        return fail(exc.reason, exc.detail, exc.raw)
    except TransportError as exc:
        return fail("transport_error", str(exc))
    except RowRejected as exc:
        raw = result.completion.text if result.completion else ""
        return fail(exc.reason, exc.detail, raw)
    return result


_END = object()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _drive(
    task: LLMTask, items: Iterable[Any], llm: LLMEngine, window: int, out: queue.SimpleQueue
) -> None:
    """Inside the engine's loop: keep ``window`` items in flight, emit results in input order."""
    slots = asyncio.Semaphore(window)  # released when a result leaves, bounding memory too
    done: dict[int, TaskResult] = {}
    next_out = 0
    budget: list[BudgetExceeded] = []
    errors: list[Exception] = []
    running: set[asyncio.Task] = set()

    def emit() -> None:
        nonlocal next_out
        while next_out in done:
            out.put(done.pop(next_out))
            next_out += 1
            slots.release()

    async def one(index: int, item: Any) -> None:
        try:
            done[index] = await _run_one(task, item, llm)
        except BudgetExceeded as exc:
            budget.append(exc)
            done[index] = None  # type: ignore[assignment]
        except Exception as exc:  # e.g. BackendRejected: stop, never leave a gap in the order
            errors.append(exc)
            done[index] = None  # type: ignore[assignment]
        emit()

    try:
        for index, item in enumerate(items):
            await slots.acquire()
            if budget or errors:
                break
            t = asyncio.ensure_future(one(index, item))
            running.add(t)
            t.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)
        if errors:
            out.put(_Raised(errors[0]))
        elif budget:
            out.put(_Raised(budget[0]))
    except BaseException as exc:  # items raised, or cancelled by a closed consumer
        for t in running:
            t.cancel()
        out.put(_Raised(exc))
        raise
    finally:
        out.put(_END)


def run_task(
    task: LLMTask[ItemT, OutT],
    items: Iterable[ItemT],
    llm: LLMEngine,
    *,
    window: int | None = None,
    on_result: Callable[[TaskResult[ItemT, OutT]], None] | None = None,
) -> Iterator[TaskResult[ItemT, OutT]]:
    """Run ``task`` over ``items`` with up to ``window`` items in flight; yields in input order.

    Streams: items are pulled lazily (on the engine's loop thread) and each result leaves as
    soon as it is next in order. Raises BudgetExceeded after yielding everything that
    finished before the budget ran out.
    """
    window = window or max(4, llm.concurrency * 2)
    llm.note_prompts(task.prompts)
    out: queue.SimpleQueue = queue.SimpleQueue()
    future = llm.submit(_drive(task, items, llm, window, out))
    try:
        while True:
            msg = out.get()
            if msg is _END:
                break
            if isinstance(msg, _Raised):
                raise msg.exc
            if msg is None:  # an item stopped by the budget
                continue
            if on_result is not None:
                on_result(msg)
            yield msg
    finally:
        if not future.done():
            future.cancel()
