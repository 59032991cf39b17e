"""What the user sees: rich progress bars during a run and a summary table at the end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from fingen.config import PipelineConfig
from fingen.manifest import summary_rows
from fingen.pipeline import RunResult, run_pipeline
from fingen.stages.base import Progress as StageProgress

__all__ = ["console", "print_summary", "run_with_progress"]

console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def print_summary(result: RunResult) -> None:
    """The end-of-run table: per stage counts, cache hits, requests, tokens, time."""
    table = Table(title=f"fingen run: {result.manifest.get('pipeline')} ({result.status})")
    cols = ("stage", "in", "ok", "fail", "rej", "outputs", "cache", "req", "tokens", "time")
    for col in cols:
        left = col in ("stage", "outputs")
        table.add_column(col, justify="left" if left else "right", min_width=len(col))
    for row in summary_rows(result.manifest):
        table.add_row(*row)
    totals = result.manifest.get("totals", {})
    console.print(table)
    console.print(
        "[dim]in: inputs; ok/fail: inputs that succeeded/failed; rej: rows rejected by checks; "
        "cache: answers from the request cache; req: requests sent[/]"
    )
    wall = float(result.manifest.get("wall_s", 0) or 0)
    llm_s = sum(
        e.get("usage", {}).get("llm_s", 0)
        for e in result.manifest.get("stages", {}).values()
        if not e.get("resumed") and not e.get("earlier")
    )
    share = f"  LLM time {llm_s:.0f}s = {100 * llm_s / wall:.0f}% of wall" if wall and llm_s else ""
    console.print(
        f"tokens in/out: {totals.get('prompt_tokens', 0)}/{totals.get('completion_tokens', 0)}"
        f"  cost: ${totals.get('cost', 0):.4f}  wall: {wall:.1f}s{share}"
    )
    by_model = totals.get("by_model", {})
    if len(by_model) > 1 or any(n != "default" for n in by_model):
        console.print(
            "by model: "
            + "; ".join(
                f"{name} {u['requests']} req, {u['prompt_tokens'] + u['completion_tokens']} "
                f"tokens, ${u['cost']:.4f}"
                for name, u in by_model.items()
            )
        )
    judged = [f"{k} ({e['self_judged']})" for k, e in result.manifest.get("stages", {}).items()
              if e.get("self_judged")]  # fmt: skip
    if judged:
        console.print(
            f"[yellow]self-judged[/]: {', '.join(judged)}: the judge is the model that wrote "
            "what it judges; add models.judge (another model) for independent labels"
        )
    failures: dict[str, int] = {}
    for entry in result.manifest.get("stages", {}).values():
        for reason, n in entry.get("failures_by_reason", {}).items():
            failures[reason] = failures.get(reason, 0) + n
    if failures:
        console.print(
            "failures by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(failures.items()))
        )
    console.print(f"run directory: [bold]{result.run_dir}[/]  (manifest.json, <stage>.jsonl)")
    transient = sum(
        e.get("transient_failures", 0) for e in result.manifest.get("stages", {}).values()
    )
    if result.status == "complete_with_failures":
        console.print(
            f"[yellow]{transient} rows failed for a transient reason (server errors, timeouts, "
            "truncated or unreadable replies)[/]: run the same command again to retry them; "
            "answers that succeeded come from the cache"
        )


class LiveColumn(ProgressColumn):
    """The model's queue and speed while it works (``fingen.llm.engine.live_stats``)."""

    def render(self, task: object) -> Text:
        from fingen.llm.engine import live_stats

        live = live_stats()
        if not (live["in_flight"] or live["queued"]):
            return Text("")
        speed = f" {live['tokens_per_s']:.1f} tok/s" if live["tokens_per_s"] else ""
        return Text(f"llm: {live['in_flight']} in flight, {live['queued']} queued{speed}",
                    style="dim")  # fmt: skip


def run_with_progress(config: PipelineConfig, run_dir: Path | None) -> RunResult:
    """Run a pipeline with progress bars and print the summary."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        LiveColumn(),
        console=console,
        transient=False,
    ) as bars:
        open_tasks: list[Any] = []
        warned: set[str] = set()

        def make(desc: str, total: int | None) -> StageProgress:
            task = bars.add_task(desc, total=total)
            open_tasks.append(task)
            return StageProgress(lambda n: bars.advance(task, n))

        def on_stage(key: str, entry: dict[str, Any]) -> None:
            for task in bars.tasks:  # the stage is over: freeze its bars
                if task.id in open_tasks:
                    bars.update(task.id, total=task.completed)
                    bars.stop_task(task.id)
            open_tasks.clear()
            from fingen.llm.engine import live_stats

            for warning in dict.fromkeys(live_stats()["warnings"]):
                if warning not in warned:
                    warned.add(warning)
                    bars.console.print(f"[yellow]warning[/]: {warning}")
            if entry.get("resumed"):
                bars.console.print(f"[dim]{key}: done in an earlier run, skipped[/]")
            elif not bars.console.is_terminal:  # logs get one line per stage instead of bars
                outs = ", ".join(f"{k}={v}" for k, v in entry.get("outputs", {}).items())
                bars.console.print(
                    f"{key}: {entry.get('status')} in {entry.get('wall_s', 0):.1f}s; "
                    f"{entry.get('inputs', 0)} in, {entry.get('succeeded', 0)} ok, "
                    f"{entry.get('failed', 0)} failed, {entry.get('rejected_rows', 0)} rejected; {outs}"
                )

        result = run_pipeline(config, run_dir, progress_factory=make, on_stage=on_stage)
    print_summary(result)
    return result


def stage_reference(names: list[str] | None = None) -> str:
    """Markdown reference of stages and their params (from the params models themselves)."""
    from fingen.pipeline import STAGES, resolve_stage

    lines = []
    for name in names or list(STAGES):
        fn = resolve_stage(name)
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        lines += [
            f"### `{name}`",
            "",
            doc,
            "",
            "| param | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for pname, field in fn.params_model.model_fields.items():
            ann = getattr(field.annotation, "__name__", None) or str(field.annotation)
            ann = ann.replace("typing.", "").replace("|", "\\|")
            default = (
                "required"
                if field.is_required()
                else repr(field.get_default(call_default_factory=True))
            )
            lines.append(f"| `{pname}` | {ann} | `{default}` | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)
