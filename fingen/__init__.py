"""fingen: synthetic datasets for financial retrieval and reasoning.

The public API: records, configuration, errors, the LLM engine and task runner, and the
pipeline runner. Methods live in ``fingen.ingest``, ``fingen.embed``, ``fingen.retrieval``,
``fingen.reasoning`` and ``fingen.export``; each is callable without the runner.
"""

from __future__ import annotations

from fingen.config import EmbedderConfig, LLMConfig, PipelineConfig, StageConfig, load_pipeline
from fingen.errors import (
    BudgetExceeded,
    ConfigError,
    DocumentError,
    FingenError,
    InputError,
    LLMError,
    MissingExtraError,
    PublishError,
    StructuredOutputError,
    TransportError,
    UserError,
)
from fingen.records import (
    CoTSample,
    Document,
    DPORecord,
    Failure,
    HardNegatives,
    Passage,
    QAItem,
    Qrel,
    Query,
    RLRecord,
    Sentence,
    SFTRecord,
    TopicCluster,
    content_id,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "CoTSample",
    "ConfigError",
    "DPORecord",
    "Document",
    "DocumentError",
    "EmbedderConfig",
    "Failure",
    "FingenError",
    "HardNegatives",
    "InputError",
    "LLMConfig",
    "LLMError",
    "MissingExtraError",
    "Passage",
    "PipelineConfig",
    "PublishError",
    "QAItem",
    "Qrel",
    "Query",
    "RLRecord",
    "SFTRecord",
    "Sentence",
    "StageConfig",
    "StructuredOutputError",
    "TopicCluster",
    "TransportError",
    "UserError",
    "__version__",
    "build_engine",
    "content_id",
    "load_pipeline",
    "load_run",
    "run_pipeline",
    "run_task",
]


def __getattr__(name: str) -> object:
    # The engine and runner pull in aiohttp/asyncio machinery: import them on first use.
    if name in ("build_engine", "run_task"):
        from fingen import llm

        return getattr(llm, name)
    if name == "run_pipeline":
        from fingen.pipeline import run_pipeline

        return run_pipeline
    if name == "load_run":
        from fingen.run import load_run

        return load_run
    raise AttributeError(f"module 'fingen' has no attribute {name!r}")
