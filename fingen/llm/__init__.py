"""The LLM layer: backends (OpenAI-compatible HTTP, embedded llama.cpp, vLLM, fake), the
request cache, structured output with re-asks, usage and budgets, and the task runner."""

from __future__ import annotations

from fingen.llm.base import Backend, ChatRequest, Completion, Usage
from fingen.llm.engine import LLMEngine, StructuredResult, UsageMeter, build_engine
from fingen.llm.tasks import LLMTask, RowRejected, TaskResult, run_task

__all__ = [
    "Backend",
    "ChatRequest",
    "Completion",
    "LLMEngine",
    "LLMTask",
    "RowRejected",
    "StructuredResult",
    "TaskResult",
    "Usage",
    "UsageMeter",
    "build_engine",
    "run_task",
]
