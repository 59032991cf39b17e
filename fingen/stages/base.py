"""What a pipeline stage is and receives: its spec, its context (inputs, outputs, model,
embedder, counters).

A stage is a function ``run(ctx, params) -> None`` decorated with
``@stage(ParamsModel, inputs={...}, outputs={...})``. It reads its inputs with ``ctx.input``,
calls one method (fingen.ingest, .retrieval, .reasoning, .export), writes with
``ctx.output`` and counts with ``ctx.stats`` / ``ctx.collect``. The methods know nothing of
stages or the runner.

Inputs are wired one way: an input param names stage outputs (``"chunk"``,
``["bottom_up.queries", "top_down.queries"]``) or is left unset, which means "the run's
records of that kind so far" (see ``fingen.run.RunView``). Outputs are declared with their
record kind; every declared output file exists once the stage has run, even when empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from fingen.errors import ConfigError
from fingen.records import Failure
from fingen.redact import redact
from fingen.run import OutputFile, RunView
from fingen.store import JsonlWriter, RunStore

if TYPE_CHECKING:
    from fingen.config import PipelineConfig
    from fingen.embed.base import Embedder
    from fingen.llm.engine import LLMEngine
    from fingen.llm.tasks import TaskResult

__all__ = [
    "TRANSIENT_REASONS",
    "Progress",
    "StageContext",
    "StageParams",
    "StageSpec",
    "StageStats",
    "output_files",
    "spec_of",
    "stage",
]

F = TypeVar("F", bound=Callable[..., Any])
#: Failure reasons a re-run can fix: the stage runs again and re-attempts those rows (the
#: request cache keeps every request that succeeded, so none is paid twice).
TRANSIENT_REASONS = frozenset(
    {"transport_error", "truncated", "invalid_json", "schema_mismatch", "no_verdict"}
    | {"worker_error"}  # a batch whose worker raised (fingen.executors): its items re-run
)


class StageParams(BaseModel):
    """Base of every stage's params: unknown keys are errors. ``file_params`` names the
    params (dotted) that are input files, which ``fingen validate`` checks exist."""

    model_config = ConfigDict(extra="forbid")
    file_params: ClassVar[tuple[str, ...]] = ()

    def input_paths(self) -> list[tuple[str, str]]:
        """``(param, path)`` for every input file the params name."""
        out: list[tuple[str, str]] = []
        for dotted in self.file_params:
            value: Any = self
            for part in dotted.split("."):
                value = getattr(value, part, None)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item:
                    out.append((dotted, item))
        return out


Role = Literal["generate", "judge", "teach"]


@dataclass(frozen=True)
class StageSpec:
    """A stage's params model, its inputs (param -> record kind; ``?`` = optional), its
    outputs (name -> kind; ``""`` is the main output; ``:replace`` replaces the kind), the
    role of its model (judging stages default to the ``judge`` model, distillation to the
    ``teacher``) and the record kind it judges (for the self-judging check)."""

    params_model: type[StageParams]
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    role: Role = "generate"
    judges: str | None = None

    def output_kind(self, name: str) -> tuple[str, str]:
        kind, _, mode = self.outputs[name].partition(":")
        return kind, mode or "merge"


def stage(
    params_model: type[StageParams],
    *,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    role: Role = "generate",
    judges: str | None = None,
) -> Callable[[F], F]:
    """Mark a function as a pipeline stage with its params model, inputs and outputs."""

    def wrap(fn: F) -> F:
        spec = StageSpec(params_model, dict(inputs or {}), dict(outputs or {}), role, judges)
        fn.spec = spec  # type: ignore[attr-defined]
        fn.params_model = params_model  # type: ignore[attr-defined]
        return fn

    return wrap


def spec_of(fn: Callable[..., Any]) -> StageSpec:
    return fn.spec  # type: ignore[attr-defined,no-any-return]


def output_files(root: Path, key: str, stage_type: str, spec: StageSpec) -> list[OutputFile]:
    """The data files a stage writes (its declared outputs) under ``root``."""
    out = []
    for name in spec.outputs:
        kind, mode = spec.output_kind(name)
        out.append(OutputFile(key, stage_type, name, kind, mode, root))
    return out


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
    skipped: Counter[str] = field(default_factory=Counter)  # not eligible: neither in nor failed
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
            "transient_failures": sum(
                n for reason, n in self.failures.items() if reason in TRANSIENT_REASONS
            ),
            **({"skipped": dict(self.skipped)} if self.skipped else {}),
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
    get_llm: Callable[..., LLMEngine]
    get_embedder: Callable[[], Embedder]
    make_progress: Callable[[str, int | None], Progress] = lambda desc, total: Progress()
    spec: StageSpec | None = None
    upstream: list[OutputFile] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=lambda: {"llm": "default", "judge": "default"})
    used_models: dict[str, str] = field(default_factory=dict)
    _writers: dict[str, JsonlWriter] = field(default_factory=dict)
    # -- set by the executor (fingen.executors) -------------------------------------------
    fingerprint: str = ""  # the stage's fingerprint (names its shards)
    remote_usage: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> usage
    remote_prompts: dict[str, str] = field(default_factory=dict)  # templates used elsewhere

    @property
    def run_dir(self) -> Path:
        return self.store.root

    @property
    def lang(self) -> str:
        return self.config.lang

    def llm(self) -> LLMEngine:
        """The stage's model (``model:`` of the stage, else by its role), metered here."""
        self.used_models["llm"] = self.models["llm"]
        return self.get_llm(self.key, self.models["llm"])

    def judge_llm(self) -> LLMEngine:
        """The model of the stage's judging step (``judge_model:``, else ``models.judge``)."""
        self.used_models["judge"] = self.models["judge"]
        return self.get_llm(self.key, self.models["judge"])

    def named_llm(self, name: str, config: Any = None) -> LLMEngine:
        """Model ``name`` of the run's models (or registered now from ``config``: an
        ``LLMConfig``), metered under this stage and counted in the run's budget."""
        self.used_models[f"model:{name}"] = name
        return self.get_llm(self.key, name, config)

    def embedder(self) -> Embedder:
        return self.get_embedder()

    def view(self) -> RunView:
        """The run as it stands before this stage."""
        return RunView(self.store.root, self.upstream)

    def input(self, param: str, refs: str | list[str] | None) -> Iterator[Any]:
        """Records of input ``param``: the named outputs, else the run's records of the
        param's kind so far (an error when none are there and the input is required)."""
        declared = self.spec.inputs[param] if self.spec else "?"
        kind, optional = declared.rstrip("?"), declared.endswith("?")
        view = self.view()
        if refs is not None:
            return view.read_refs([refs] if isinstance(refs, str) else refs, kind)
        if not view.produces(kind) and not optional:
            raise ConfigError(
                f"no earlier stage produces {kind} records: add one before this stage, "
                f"or name the input in '{param}'",
                where=f"stages.{self.key}.params",
            )
        return view.records(kind)

    def rows(self, ref: str) -> Iterator[dict[str, Any]]:
        """The rows of an earlier stage's output ``ref`` (``stage`` or ``stage.output``), as
        plain dicts, whatever they hold."""
        stage_key, _, output = ref.partition(".")
        return self.store.read(stage_key, output, None)

    def output(self, name: str = "") -> JsonlWriter:
        """The writer of this stage's output ``name`` ('' = the main output)."""
        if name not in self._writers:
            self._writers[name] = self.store.writer(self.key, name)
        return self._writers[name]

    def fail(self, failure: Failure, *, item: bool = True) -> None:
        """Record a failure: a whole input item (``item=True``) or one rejected row."""
        failure = failure.model_copy(
            update={"stage": self.key, "detail": redact(failure.detail), "raw": redact(failure.raw)}
        )
        self.output("failures").write(failure)
        self.stats.failures[failure.reason] += 1
        if item:
            self.stats.failed += 1
        else:
            self.stats.rejected_rows += 1

    def count(self, items: Iterable[Any]) -> Iterator[Any]:
        """Count each item as a succeeded input, or a failed one when it is a Failure."""
        for item in items:
            self.stats.inputs += 1
            if isinstance(item, Failure):
                self.fail(item)
            else:
                self.stats.succeeded += 1
                yield item

    def progress(self, description: str, total: int | None = None) -> Progress:
        return self.make_progress(f"{self.key}: {description}", total)

    def collect(
        self, results: Iterable[TaskResult], progress: Progress | None = None
    ) -> Iterator[Any]:
        """Count method results (``TaskResult``) into the stats and yield their records."""
        for result in results:
            if result.skipped:
                self.stats.skipped[result.skipped] += 1
                continue
            self.stats.inputs += 1
            if result.ok:
                self.stats.succeeded += 1
            for f in result.failures:
                self.fail(f, item=not result.ok)
            if result.cached:
                self.stats.cached += 1
            for name, n in result.counts.items():
                self.stats.extra[name] = self.stats.extra.get(name, 0) + n
            if progress is not None:
                progress.advance()
            yield from result.records

    def route(self, records: Iterable[Any], where: Callable[[Any], str | None]) -> Counter[str]:
        """Write each record to the output ``where(record)`` names (None: not written)."""
        counts: Counter[str] = Counter()
        for rec in records:
            name = where(rec)
            if name is not None:
                self.output(name).write(rec)
                counts[name] += 1
        return counts

    def commit(self) -> None:
        if self.spec is not None:
            for name in self.spec.outputs:
                self.output(name)  # every declared output exists, even when empty
        for name, writer in self._writers.items():
            writer.commit()
            self.stats.outputs[name or "main"] = writer.rows
        self._writers.clear()

    def abort(self) -> None:
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()

    def with_remote_usage(
        self, usage: dict[str, Any] | None, by_model: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """This process's usage of the stage plus what executor workers reported."""
        if not self.remote_usage:
            return usage, by_model
        merged = {name: dict(u) for name, u in by_model.items()}
        for name, extra in self.remote_usage.items():
            have = merged.setdefault(name, {})
            for k, v in extra.items():
                have[k] = have.get(k, 0) + v
        total: dict[str, Any] = {}
        for u in merged.values():
            for k, v in u.items():
                total[k] = total.get(k, 0) + v
        for u in [total, *merged.values()]:
            for k in ("cost", "llm_s"):
                if k in u:
                    u[k] = round(u[k], 6 if k == "cost" else 3)
        return total, merged

    def kinds(self) -> tuple[dict[str, str], list[str]]:
        """``(output -> kind, outputs that replace their kind)`` for the manifest."""
        if self.spec is None:
            return {}, []
        kinds, replaces = {}, []
        for name in self.spec.outputs:
            kind, mode = self.spec.output_kind(name)
            kinds[name or "main"] = kind
            if mode == "replace":
                replaces.append(name or "main")
        return kinds, replaces
