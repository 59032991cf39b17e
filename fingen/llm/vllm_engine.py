"""In-process vLLM (``backend: vllm``; optional extra ``fingen[vllm]``, needs a GPU).

Structured output uses vLLM's guided decoding (``StructuredOutputsParams`` in recent vLLM,
``GuidedDecodingParams`` in older releases). Caching, re-asks and budgets stay in the engine
above, so this backend behaves like the HTTP ones. For a vLLM *server*, use
``backend: openai`` with its ``base_url``.
"""

from __future__ import annotations

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
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise MissingExtraError("vllm", "vllm", "backend 'vllm'") from exc
        self.model = model
        self.identity = f"vllm:{model}"
        self._engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(model=model, **engine_args))
        self._ids = itertools.count()
        self._tokenizer: Any = None

    async def _prompt(self, request: ChatRequest) -> str:
        if self._tokenizer is None:
            self._tokenizer = await self._engine.get_tokenizer()
        return self._tokenizer.apply_chat_template(
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


def create_vllm_backend(config: LLMConfig) -> VLLMEngineBackend:
    """Load ``config.model`` into an in-process vLLM engine with ``config.vllm_engine`` args."""
    if not config.model:
        from fingen.errors import ConfigError

        raise ConfigError("backend 'vllm' needs llm.model (a HF model path)", where="llm.model")
    return VLLMEngineBackend(config.model, dict(config.vllm_engine))
