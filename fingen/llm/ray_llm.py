"""``backend: ray_llm``: requests answered by vLLM engines on a Ray cluster through
``ray.data.llm`` (``build_processor`` + ``vLLMEngineProcessorConfig``), in rounds.

A stage never waits on a single request here. It runs in rounds (``fingen.executors``):

1. the stage runs against a ``DeferredBackend``: every request the request cache cannot
   answer is recorded and fails at once;
2. the recorded requests go to the cluster as one Ray dataset: ``processor_row`` (the
   preprocess) turns each ``ChatRequest`` (fingen's prompt, built by the task's ``build``,
   with the schema instruction the engine adds) into ``messages`` + ``sampling_params`` with
   ``structured_outputs={"json": <schema>}``; ``completion_row`` (the postprocess) turns the
   engine's row back into a ``Completion``; ``prefill`` stores each under the request's cache
   key;
3. repeat while new requests appear (re-asks, a judging step after generation);
4. the stage runs once more for real: every request is a cache hit, and the task's
   ``parse``, the engine's structured output, re-asks and failure accounting are exactly
   those of any other backend.

Nothing here imports ray or vllm until a round is sent. The cache identity is
``vllm:<model>``, the in-process vLLM backend's. Requests that failed in the engine are not
sent again in the same stage; they fail as ``transport_error`` (a re-run retries them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fingen.errors import BudgetExceeded, ConfigError, MissingExtraError, TransportError
from fingen.llm.base import ChatRequest, Completion, SchemaStyle, Usage
from fingen.llm.budget import estimate_tokens
from fingen.llm.cache import request_key
from fingen.llm.config import LLMConfig

__all__ = [
    "DeferredBackend",
    "PrefillReport",
    "completion_row",
    "create_deferred_backend",
    "prefill",
    "processor_row",
    "reset_round_state",
    "run_processor",
]

_ERRORS: dict[str, str] = {}  # cache key -> the engine's error (not sent again this stage)
_BUDGET: list[BudgetExceeded] = []  # set when a round could not send everything
_LOCK = threading.Lock()


def reset_round_state() -> None:
    """Forget engine errors and budget stops (at the start of a stage)."""
    with _LOCK:
        _ERRORS.clear()
        _BUDGET.clear()


class DeferredBackend:
    """Records what the cache could not answer; answers nothing itself."""

    schema_style: SchemaStyle = "json_schema"

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.model = config.model
        self.identity = f"vllm:{config.model}"
        self._deferred: dict[str, ChatRequest] = {}
        self._lock = threading.Lock()

    async def complete(self, request: ChatRequest) -> Completion:
        key = request_key(self.identity, request)
        with _LOCK:
            error = _ERRORS.get(key)
            budget = _BUDGET[0] if _BUDGET else None
        if error is not None:
            raise TransportError(f"ray.data.llm engine error: {error}")
        if budget is not None:
            raise BudgetExceeded(budget.what, budget.used, budget.limit)
        with self._lock:
            self._deferred[key] = request
        raise TransportError("deferred to the next ray.data.llm round")

    def take(self) -> dict[str, ChatRequest]:
        """The requests recorded since the last ``take`` (cache key -> request)."""
        with self._lock:
            out, self._deferred = self._deferred, {}
        return out

    async def aclose(self) -> None:
        return None


def create_deferred_backend(config: LLMConfig) -> DeferredBackend:
    if not config.model:
        raise ConfigError("backend 'ray_llm' needs llm.model (a HF model path)", where="llm.model")
    return DeferredBackend(config)


# -- preprocess / postprocess ------------------------------------------------------------------


def processor_row(key: str, request: ChatRequest) -> dict[str, Any]:
    """The ``ray.data.llm`` row of one request (what the preprocess returns).

    Every row has the same columns and nested keys (Arrow merges them across rows): the
    schema travels as a JSON string, ``top_p`` is 1.0 when unset, and ``structured_outputs``
    is left out (None) for free-text requests."""
    sampling: dict[str, Any] = {
        "temperature": float(request.temperature),
        "max_tokens": int(request.max_tokens),
        "top_p": float(request.top_p) if request.top_p is not None else 1.0,
        "seed": request.seed if request.seed is not None else (request.sample_idx or None),
        "stop": list(request.stop) if request.stop else None,
    }
    if request.json_schema is not None:
        sampling["structured_outputs"] = {
            "json": json.dumps(request.json_schema, sort_keys=True, ensure_ascii=False)
        }
    return {
        "fingen_key": key,
        "fingen_max_tokens": int(request.max_tokens),
        "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
        "sampling_params": sampling,
    }


def completion_row(row: dict[str, Any]) -> dict[str, Any]:
    """The postprocess: the engine's output row -> the few columns fingen keeps."""
    n_out = int(row.get("num_generated_tokens") or 0)
    limit = int(row.get("fingen_max_tokens") or 0)
    return {
        "fingen_key": row["fingen_key"],
        "text": str(row.get("generated_text") or ""),
        "prompt_tokens": int(row.get("num_input_tokens") or 0),
        "completion_tokens": n_out,
        "finish_reason": "length" if limit and n_out >= limit else "stop",
        "error": str(row.get("__inference_error__") or ""),
    }


def parse_result(row: dict[str, Any], model: str) -> tuple[str, Completion | None, str]:
    """``(key, completion, "")`` for an answered row, ``(key, None, error)`` for a failed one
    (failed rows skip the postprocess and keep the engine's columns)."""
    key = str(row.get("fingen_key", ""))
    error = str(row.get("__inference_error__") or row.get("error") or "")
    if error:
        return key, None, error[:500]
    if "text" not in row:  # an engine row that did not pass the postprocess
        row = completion_row(row)
    usage = Usage(
        prompt_tokens=int(row["prompt_tokens"]), completion_tokens=int(row["completion_tokens"])
    )
    completion = Completion(
        text=row["text"], finish_reason=row["finish_reason"], usage=usage, model=model
    )
    return key, completion, ""


def run_processor(rows: list[dict[str, Any]], config: LLMConfig) -> list[dict[str, Any]]:
    """Send ``rows`` through a ``ray.data.llm`` vLLM processor; one result row per row.

    Needs ``ray[data]``, ``vllm`` and GPUs on the cluster (``fingen[vllm]`` beside
    ``fingen[ray]``). ``llm.vllm_engine`` are the engine args, ``llm.ray_llm`` further
    ``vLLMEngineProcessorConfig`` fields (``concurrency``, ``batch_size``, ...)."""
    try:
        import ray
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    except ImportError as exc:
        raise MissingExtraError("ray", "ray", "backend 'ray_llm'") from exc
    settings: dict[str, Any] = {
        "batch_size": 32,
        "concurrency": 1,
        "tokenize_stage": False,
        "detokenize_stage": False,
    }
    settings.update(config.ray_llm)
    settings["should_continue_on_error"] = True  # a failed row is a failure, not a dead job
    processor_config = vLLMEngineProcessorConfig(
        model_source=config.model, engine_kwargs=dict(config.vllm_engine), **settings
    )
    processor = build_processor(
        processor_config,
        preprocess=lambda r: {"messages": r["messages"], "sampling_params": r["sampling_params"]},
        postprocess=completion_row,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ds = ray.data.from_items(rows)
    return [dict(r) for r in processor(ds).take_all()]


# -- rounds ------------------------------------------------------------------------------------


@dataclass
class PrefillReport:
    """What one round sent and got back (usage counts only answered requests)."""

    sent: int = 0
    answered: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    budget: BudgetExceeded | None = None
    error_samples: list[str] = field(default_factory=list)

    def usage(self) -> dict[str, float]:
        return {
            "requests": self.sent,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
        }


def _price(config: LLMConfig, prompt: int, completion: int) -> float:
    p = config.prices
    return 0.0 if p is None else (prompt * p.input_per_mtok + completion * p.output_per_mtok) / 1e6


def prefill(
    requests: dict[str, ChatRequest],
    config: LLMConfig,
    cache: Any,
    budget: Any = None,
    run_rows: Callable[[list[dict[str, Any]], LLMConfig], list[dict[str, Any]]] | None = None,
) -> PrefillReport:
    """Answer ``requests`` (cache key -> request) in one processor run and store every
    answer in ``cache`` under its key; requests already cached are not sent. ``budget``
    reserves each request's worst case first; what does not fit is not sent (and later
    requests of the stage stop with ``BudgetExceeded``)."""
    report = PrefillReport()
    todo = [(k, r) for k, r in requests.items() if cache.get(k) is None]
    rows, held = [], {}
    for key, req in todo:
        if budget is not None:
            prompt = sum(estimate_tokens(m.get("content", "")) for m in req.messages)
            try:
                held[key] = budget.reserve(
                    prompt + req.max_tokens, _price(config, prompt, req.max_tokens)
                )
            except BudgetExceeded as exc:
                report.budget = exc
                with _LOCK:
                    _BUDGET[:] = [exc]
                break
        rows.append(processor_row(key, req))
    if not rows:
        return report
    report.sent = len(rows)
    results = (run_rows or run_processor)(rows, config)
    seen: set[str] = set()
    for row in results:
        key, completion, error = parse_result(row, config.model)
        seen.add(key)
        reservation = held.pop(key, None)
        if completion is None:
            report.errors += 1
            if len(report.error_samples) < 3:
                report.error_samples.append(error)
            with _LOCK:
                _ERRORS[key] = error
            if reservation is not None:
                budget.settle(reservation)
            continue
        u = completion.usage
        cost = _price(config, u.prompt_tokens, u.completion_tokens)
        if reservation is not None:
            budget.settle(reservation, u.prompt_tokens + u.completion_tokens, cost)
        cache.put(key, completion)
        report.answered += 1
        report.prompt_tokens += u.prompt_tokens
        report.completion_tokens += u.completion_tokens
        report.cost += cost
    for key, reservation in held.items():  # rows the processor lost
        budget.settle(reservation)
        with _LOCK:
            _ERRORS[key] = "no result row"
    return report
