"""In-process vLLM (``backend: vllm``; optional extra ``fingen[vllm]``, needs a GPU).

Written against vLLM 0.33 (``vllm.AsyncLLMEngine`` is ``vllm.v1.engine.async_llm.AsyncLLM``):
the engine is built on first use, inside fingen's engine loop (vLLM wants a running loop);
the chat template is applied with the engine's tokenizer (``AsyncLLM`` has no ``chat``);
structured output is ``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))``
(``GuidedDecodingParams`` only on releases before 0.10); only the final output of each
request is streamed back. Caching, re-asks and budgets stay in the engine above, so this
backend behaves like the HTTP ones. For a vLLM *server*, use ``backend: openai`` with its
``base_url``. ``bench/gpu_check.sh`` runs it against raw ``vllm.LLM.chat`` on a GPU.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

from fingen.errors import MissingExtraError, TransportError
from fingen.llm.base import ChatRequest, Completion, SchemaStyle, Usage
from fingen.llm.config import LLMConfig

__all__ = ["VLLMEngineBackend", "create_vllm_backend"]


def _structured_kwargs(schema: dict[str, Any]) -> dict[str, Any]:
    try:  # vLLM >= 0.10
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


class VLLMEngineBackend:
    """One ``AsyncLLMEngine`` in this process; requests are batched by vLLM itself."""

    schema_style: SchemaStyle = "json_schema"

    def __init__(self, model: str, engine_args: dict[str, Any]) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("vllm", "vllm", "backend 'vllm'") from exc
        self.model = model
        self.identity = f"vllm:{model}"
        self.engine_args = dict(engine_args)
        self._engine: Any = None
        self._lock: asyncio.Lock | None = None
        self._ids = itertools.count()
        self._tokenizer: Any = None

    async def _start(self) -> Any:
        """The engine, built on the running loop on first use (vLLM's async engine needs one)."""
        if self._engine is not None:
            return self._engine
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._engine is None:
                from vllm import AsyncEngineArgs, AsyncLLMEngine

                args = AsyncEngineArgs(model=self.model, **self.engine_args)
                self._engine = AsyncLLMEngine.from_engine_args(args)
        return self._engine

    async def _prompt(self, request: ChatRequest) -> str:
        engine = await self._start()
        if self._tokenizer is None:
            tokenizer = engine.get_tokenizer()  # sync in vLLM 0.33, a coroutine before
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        return self._tokenizer.apply_chat_template(  # type: ignore[no-any-return]
            request.messages, tokenize=False, add_generation_prompt=True
        )

    async def complete(self, request: ChatRequest) -> Completion:
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed if request.seed is not None else request.sample_idx or None,
            "stop": request.stop,
        }
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.json_schema is not None:
            kwargs.update(_structured_kwargs(request.json_schema))
        try:  # only the finished output comes back (no per-token streaming)
            from vllm.sampling_params import RequestOutputKind

            kwargs["output_kind"] = RequestOutputKind.FINAL_ONLY
        except ImportError:
            pass
        params = SamplingParams(**kwargs)
        prompt = await self._prompt(request)
        final = None
        try:
            async for output in self._engine.generate(prompt, params, f"fingen-{next(self._ids)}"):
                final = output
        except Exception as exc:  # vLLM raises engine-specific errors
            raise TransportError(f"vLLM engine error: {exc}") from exc
        if final is None or not final.outputs:
            raise TransportError("vLLM returned no output")
        out = final.outputs[0]
        return Completion(
            text=out.text,
            finish_reason=out.finish_reason or "stop",
            usage=Usage(
                prompt_tokens=len(final.prompt_token_ids or []),
                completion_tokens=len(out.token_ids or []),
            ),
            model=self.model,
        )

    async def aclose(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self._engine = None


def create_vllm_backend(config: LLMConfig) -> VLLMEngineBackend:
    """Load ``config.model`` into an in-process vLLM engine with ``config.vllm_engine`` args."""
    if not config.model:
        from fingen.errors import ConfigError

        raise ConfigError("backend 'vllm' needs llm.model (a HF model path)", where="llm.model")
    return VLLMEngineBackend(config.model, dict(config.vllm_engine))
