"""What the user sees: rich progress bars during a run and a summary table at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fingen.config import PipelineConfig
from fingen.pipeline import RunResult, run_pipeline, summary_rows
from fingen.stages.base import Progress as StageProgress

__all__ = ["console", "print_summary", "run_with_progress"]

console = Console(stderr=True)


def print_summary(result: RunResult) -> None:
    """The end-of-run table: per stage counts, cache hits, requests, tokens, time."""
    table = Table(title=f"fingen run: {result.manifest.get('pipeline')} ({result.status})")
    for col in ("stage", "in", "ok", "failed", "outputs", "cached", "requests", "tokens", "time"):
        table.add_column(col, justify="left" if col in ("stage", "outputs") else "right")
    for row in summary_rows(result.manifest):
        table.add_row(*row)
    totals = result.manifest.get("totals", {})
    console.print(table)
    console.print(
        f"tokens in/out: {totals.get('prompt_tokens', 0)}/{totals.get('completion_tokens', 0)}"
        f"  cost: ${totals.get('cost', 0):.4f}  wall: {result.manifest.get('wall_s', 0):.1f}s"
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


def run_with_progress(config: PipelineConfig, run_dir: Path | None) -> RunResult:
    """Run a pipeline with progress bars and print the summary."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bars:

        def make(desc: str, total: int | None) -> StageProgress:
            task = bars.add_task(desc, total=total)
            return StageProgress(lambda n: bars.advance(task, n))

        def on_stage(key: str, entry: dict[str, Any]) -> None:
            if entry.get("resumed"):
                bars.console.print(f"[dim]{key}: done in an earlier run, skipped[/]")

        result = run_pipeline(config, run_dir, progress_factory=make, on_stage=on_stage)
    print_summary(result)
    return result
