"""What a pipeline stage receives: its context (inputs, outputs, model, embedder, counters).

A stage is a function ``run(ctx, params) -> None`` decorated with ``@stage(ParamsModel)``.
It reads earlier stages' outputs with ``ctx.read``, writes with ``ctx.output`` and counts with
``ctx.stats``. The methods it calls (fingen.retrieval, fingen.reasoning, ...) know nothing of
stages or the runner.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict

from fingen.records import Failure
from fingen.store import JsonlWriter, RunStore

if TYPE_CHECKING:
    from fingen.config import PipelineConfig
    from fingen.embed.base import Embedder
    from fingen.llm.engine import LLMEngine
    from fingen.llm.tasks import TaskResult

__all__ = ["Progress", "StageContext", "StageParams", "StageStats", "stage"]

R = TypeVar("R", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


class StageParams(BaseModel):
    """Base of every stage's params: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def stage(params_model: type[StageParams]) -> Callable[[F], F]:
    """Mark a function as a pipeline stage with its params model."""

    def wrap(fn: F) -> F:
        fn.params_model = params_model  # type: ignore[attr-defined]
        return fn

    return wrap


@dataclass
class StageStats:
    """Honest counts: every input ends as succeeded or failed (``inputs == succeeded + failed``)."""

    inputs: int = 0
    succeeded: int = 0
    failed: int = 0
    outputs: dict[str, int] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)  # by reason (items and rejected rows)
    rejected_rows: int = 0
    cached: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "rejected_rows": self.rejected_rows,
            "cached": self.cached,
            "outputs": dict(self.outputs),
            "failures_by_reason": dict(self.failures.most_common()),
            **({"extra": self.extra} if self.extra else {}),
        }


class Progress:
    """A progress handle; the runner supplies a rich bar, tests a silent one."""

    def __init__(self, advance: Callable[[int], None] | None = None) -> None:
        self._advance = advance

    def advance(self, n: int = 1) -> None:
        if self._advance is not None:
            self._advance(n)


@dataclass
class StageContext:
    key: str
    store: RunStore
    config: PipelineConfig
    stats: StageStats
    get_llm: Callable[[str], LLMEngine]
    get_embedder: Callable[[], Embedder]
    make_progress: Callable[[str, int | None], Progress] = lambda desc, total: Progress()
    _writers: dict[str, JsonlWriter] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.store.root

    @property
    def lang(self) -> str:
        return self.config.lang

    def llm(self) -> LLMEngine:
        """The run's LLM engine, metered under this stage."""
        return self.get_llm(self.key)

    def embedder(self) -> Embedder:
        return self.get_embedder()

    def read(self, ref: str, model: type[R]) -> Iterator[R]:
        """Records of an earlier stage's output ``ref`` = ``stage`` or ``stage.output``."""
        stage_key, _, output = ref.partition(".")
        return self.store.read(stage_key, output, model)

    def output(self, name: str = "") -> JsonlWriter:
        """The writer of this stage's output ``name`` ('' = the main output)."""
        if name not in self._writers:
            self._writers[name] = self.store.writer(self.key, name)
        return self._writers[name]

    def fail(self, failure: Failure, *, item: bool = True) -> None:
        """Record a failure: a whole input item (``item=True``) or one rejected row."""
        self.output("failures").write(failure)
        self.stats.failures[failure.reason] += 1
        if item:
            self.stats.failed += 1
        else:
            self.stats.rejected_rows += 1

    def progress(self, description: str, total: int | None = None) -> Progress:
        return self.make_progress(f"{self.key}: {description}", total)

    def collect(
        self, results: Iterable[TaskResult], progress: Progress | None = None
    ) -> Iterator[Any]:
        """Count ``run_task`` results into the stats and yield their records."""
        for result in results:
            self.stats.inputs += 1
            if result.ok:
                self.stats.succeeded += 1
                for f in result.failures:
                    self.fail(f, item=False)
            else:
                for f in result.failures:
                    self.fail(f, item=True)
            if result.cached:
                self.stats.cached += 1
            if progress is not None:
                progress.advance()
            yield from result.records

    def commit(self) -> None:
        for name, writer in self._writers.items():
            writer.commit()
            self.stats.outputs[name or "main"] = writer.rows
        self._writers.clear()

    def abort(self) -> None:
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()
