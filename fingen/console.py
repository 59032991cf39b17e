"""What the user sees: rich progress bars during a run and a summary table at the end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fingen.config import PipelineConfig
from fingen.pipeline import RunResult, run_pipeline, summary_rows
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
        open_tasks: list[Any] = []

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


def ingest_files(
    paths: list[Path],
    out: Path,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    title_field: str | None = None,
    max_chars: int | None = None,
    limit: int | None = None,
) -> tuple[int, int, int]:
    """``fingen ingest``: write Documents to OUT and Passages to OUT's ``.passages.jsonl``."""
    from fingen.errors import InputError
    from fingen.ingest import FieldMap, IngestOptions, chunk_document, iter_documents
    from fingen.records import Failure
    from fingen.store import JsonlWriter

    if out.is_dir():
        raise InputError("--out must be a file (JSONL), not a directory", path=str(out))
    options = IngestOptions(
        fields=FieldMap(text_field=text_field, id_field=id_field, title_field=title_field),
        limit=limit,
    )
    docs_out = JsonlWriter(out)
    passages_out = JsonlWriter(out.with_name(out.name.removesuffix(".jsonl") + ".passages.jsonl"))
    failures: dict[str, int] = {}
    try:
        for item in iter_documents(paths, options=options):
            if isinstance(item, Failure):
                failures[item.reason] = failures.get(item.reason, 0) + 1
                console.print(f"[yellow]skipped[/] {item.item_id}: {item.reason} {item.detail}")
                continue
            docs_out.write(item)
            for passage in chunk_document(item, max_chars=max_chars):
                passages_out.write(passage)
    except BaseException:
        docs_out.abort()
        passages_out.abort()
        raise
    docs_out.commit()
    passages_out.commit()
    skipped = sum(failures.values())
    console.print(
        f"{docs_out.rows} documents -> {out}; {passages_out.rows} passages -> "
        f"{passages_out.path}; {skipped} skipped {failures or ''}"
    )
    return docs_out.rows, passages_out.rows, skipped


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
