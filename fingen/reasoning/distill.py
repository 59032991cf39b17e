"""Teacher sampling (Fin-R1): ``n`` chain-of-thought samples per QAItem, answer in ``\\boxed{}``.

Fin-R1's defaults: no system prompt, temperature 0.6, the final answer in ``\\boxed{}``. Every
sample is its own request with ``sample_idx`` in its params, so the request cache tells the
samples of one question apart (and a re-run pays for none of them again). A reasoning model's
separate reasoning field (``Completion.reasoning``) is kept. Truncated replies are kept with
``finish_reason="length"``: they are the DPO "overlong" material::

    for result in distill_samples(items, engine, n=4):
        samples.extend(result.records)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from fingen.llm.base import Completion
from fingen.llm.engine import LLMEngine
from fingen.llm.tasks import LLMTask, TaskResult, run_task
from fingen.reasoning.extract import extract_answer, split_reasoning
from fingen.records import CoTSample, QAItem, content_id

__all__ = [
    "DEFAULT_TEMPERATURE",
    "DistillTask",
    "SampleRequest",
    "distill_samples",
    "expand_samples",
    "to_cot_sample",
]

DEFAULT_TEMPERATURE = 0.6  # Fin-R1
_THINK_OPEN = re.compile(r"^\s*<think>\s*", re.IGNORECASE)


class SampleRequest(NamedTuple):
    """One teacher request: the question and which of its ``n`` samples this is."""

    item: QAItem
    idx: int


def expand_samples(items: Iterable[QAItem], n: int) -> Iterator[SampleRequest]:
    """``n`` requests per item, in item order (sample 0..n-1 of each item together)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for item in items:
        for idx in range(n):
            yield SampleRequest(item, idx)


def to_cot_sample(qa_id: str, idx: int, completion: Completion) -> CoTSample:
    """A CoTSample from one teacher completion.

    ``raw`` is the whole output; a separate reasoning field is written into it as
    ``<think>…</think>`` so ``split_reasoning(raw)`` always gives reasoning and answer section.
    """
    text = completion.text or ""
    if completion.reasoning:
        reasoning = completion.reasoning.strip()
        raw = f"<think>\n{reasoning}\n</think>\n{text.strip()}"
        answer = extract_answer(text, fallback_number=False)
    else:
        raw = text
        split = split_reasoning(text)
        reasoning, answer = _THINK_OPEN.sub("", split.reasoning), split.answer
        if answer is None and completion.finish_reason != "length":
            answer = extract_answer(text, fallback_number=False)
    return CoTSample(
        sample_id=content_id(qa_id, idx, raw, prefix="cot_"),
        qa_id=qa_id,
        sample_idx=idx,
        reasoning=reasoning,
        answer=answer or None,
        raw=raw,
        finish_reason=completion.finish_reason or "stop",
        tokens=completion.usage.completion_tokens,
    )


class DistillTask(LLMTask[SampleRequest, CoTSample]):
    """LLM task: one free-text teacher sample for a ``SampleRequest``.

    Args:
        lang: prompt language (``distill.<lang>.jinja``).
        temperature: sampling temperature (Fin-R1: 0.6).
        max_tokens: reply cap; None keeps the engine's ``max_tokens``.
        seed: when set, sample ``i`` is sent with ``seed + i`` (reproducible samples).
        top_p: nucleus sampling, None for the backend default.
        template: prompt template name.
    """

    name = "distill"
    template = "distill"
    accept_truncated = True  # overlong samples are kept (DPO "overlong" rejected)

    def __init__(
        self,
        lang: str = "en",
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        max_tokens: int | None = None,
        seed: int | None = None,
        top_p: float | None = None,
        template: str | None = None,
    ) -> None:
        super().__init__(lang=lang, template=template)
        self.temperature, self.max_tokens = temperature, max_tokens
        self.seed, self.top_p = seed, top_p

    def item_id(self, req: SampleRequest) -> str:
        return f"{req.item.qa_id}#{req.idx}"

    def build(self, req: SampleRequest) -> list[dict[str, str]]:
        return self.render(question=req.item.question, context=req.item.context)

    def request_params(self, req: SampleRequest) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": self.temperature, "sample_idx": req.idx}
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.seed is not None:
            params["seed"] = self.seed + req.idx
        if self.top_p is not None:
            params["top_p"] = self.top_p
        return params

    def parse(self, req: SampleRequest, reply: Any, completion: Completion) -> list[CoTSample]:
        return [to_cot_sample(req.item.qa_id, req.idx, completion)]


def distill_samples(
    items: Iterable[QAItem], llm: LLMEngine, *, n: int = 4, **task_options: Any
) -> Iterator[TaskResult[SampleRequest, CoTSample]]:
    """Sample ``n`` teacher outputs per item; yields one TaskResult per sample, in order.

    ``task_options`` go to :class:`DistillTask` (lang, temperature, max_tokens, seed, ...).
    """
    return run_task(DistillTask(**task_options), expand_samples(items, n), llm)
