"""The ``fingen`` command: thin; loads config, applies ``--set`` overrides, calls the library.

Library imports happen inside each command so ``fingen --help`` is instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    help=(
        "fingen: synthetic datasets for financial retrieval (hierarchical queries, mined "
        "relevance labels, hard negatives) and reasoning (verified chain-of-thought, SFT/DPO/RL).\n\n"
        "Start with `fingen demo`, then `fingen run pipelines/filings_en.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a config value: a.b=value (stages by id: stages.bottom_up.params.n=2).",
    ),
]


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file (see pipelines/).")],
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory; re-using one resumes it.")
    ] = None,
) -> None:
    """Run the stages of PIPELINE and write outputs + manifest.json to the run directory.

    Re-running with the same --out resumes: finished stages are skipped and LLM requests
    that already succeeded are answered from the run's cache.
    """
    from fingen.config import load_pipeline
    from fingen.console import run_with_progress

    config = load_pipeline(pipeline, set_ or [])
    _exit_for(run_with_progress(config, out))


def _exit_for(result: object) -> None:
    """Exit 3 when the budget stopped the run (its one-line reason is printed)."""
    manifest = getattr(result, "manifest", {})
    if manifest.get("status") == "stopped_budget":
        reasons = [e.get("reason", "") for e in manifest.get("stages", {}).values()
                   if e.get("status") == "stopped"]  # fmt: skip
        sys.stderr.write(f"stopped: {reasons[0] if reasons else 'budget reached'}\n")
        raise typer.Exit(3)


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory (default outputs/demo/<time>)."),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Run every stage on packaged sample data with the embedded model (no GPU, no key).

    ingest -> bottom-up -> top-down -> mining -> filters -> BEIR/ST exports -> CoT
    distillation -> verification -> SFT/DPO/RL exports -> HTML report. About 10 minutes on
    2 CPU cores. Try a bigger model later with --set llm.backend=openai ... .
    """
    from importlib import resources

    from fingen.config import load_pipeline
    from fingen.console import console, run_with_progress

    pipeline = Path(str(resources.files("fingen") / "_demo" / "demo.yaml"))
    result = run_with_progress(load_pipeline(pipeline, set_ or []), out)
    _exit_for(result)
    report_path = result.run_dir / "report.html"
    if report_path.is_file():
        console.print(f"report: [bold]{report_path}[/]")
    exports = result.run_dir / "exports"
    if exports.is_dir():
        for path in sorted(p for p in exports.iterdir() if p.is_dir()):
            console.print(f"export: {path}")


@app.command()
def validate(pipeline: Path, set_: SetOpt = None) -> None:
    """Check PIPELINE (keys, values, stage names and params) without running anything."""
    from rich.console import Console

    from fingen.config import load_pipeline
    from fingen.pipeline import validate_pipeline

    config = load_pipeline(pipeline, set_ or [])
    validate_pipeline(config)
    Console().print(
        f"[green]ok[/]: {pipeline} ({len(config.stages)} stages: {', '.join(s.key for s in config.stages)})"
    )


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files or directories (.txt .md .html .pdf .jsonl .csv).")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run directory: ingest.jsonl (Documents), chunk.jsonl (Passages)."
        ),
    ],
    text_field: Annotated[str, typer.Option(help="Text field for .jsonl/.csv inputs.")] = "text",
    id_field: Annotated[str | None, typer.Option(help="ID field for .jsonl/.csv inputs.")] = None,
    title_field: Annotated[
        str | None, typer.Option(help="Title field for .jsonl/.csv inputs.")
    ] = None,
    max_chars: Annotated[
        int | None, typer.Option(min=1, help="Passage size in characters (default by language).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many documents.")] = None,
) -> None:
    """Load documents and chunk them into passages (no model needed): the ingest and chunk
    stages of a pipeline, with their counts, failures and manifest."""
    from fingen.config import PipelineConfig
    from fingen.console import run_with_progress

    fields = {"text_field": text_field, "id_field": id_field, "title_field": title_field}
    config = PipelineConfig.model_validate(
        {
            "name": "ingest",
            "llm": {"backend": "fake"},
            "stages": [
                {"stage": "ingest", "params": {"paths": [str(p) for p in paths],
                                               "fields": fields, "limit": limit}},
                {"stage": "chunk", "params": {"max_chars": max_chars}},
            ],
        }
    )  # fmt: skip
    run_with_progress(config, out)


@app.command()
def stages(
    names: Annotated[list[str] | None, typer.Argument(help="Stage names (default: all).")] = None,
) -> None:
    """List pipeline stages and their params (types, defaults, meaning) as Markdown."""
    from fingen.console import stage_reference

    typer.echo(stage_reference(names))


@app.command("eval")
def eval_(
    beir_dir: Annotated[
        Path, typer.Argument(help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Embedder: minilm, e5 or a path (repeatable; the first is the reference).",
        ),
    ] = None,
    bm25: Annotated[
        bool, typer.Option("--bm25/--no-bm25", help="Include BM25 (bm25s; jieba for zh).")
    ] = True,
    split: Annotated[
        str | None,
        typer.Option(help="Score only this split's queries (dev, test, train; fingen exports)."),
    ] = None,
    lang: Annotated[
        Literal["en", "zh"], typer.Option(help="Corpus language for BM25 tokenization.")
    ] = "en",
    resamples: Annotated[
        int, typer.Option(min=100, help="Bootstrap resamples for the 95% intervals.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="JSON file (default: eval.json in the run directory).")
    ] = None,
) -> None:
    """nDCG@10, Recall@10/100 and MRR@10 per query level and overall, for several models
    on the same BEIR folder; each is compared with the first --model (paired bootstrap 95%
    interval of the per-query differences)."""
    from fingen.console import console
    from fingen.retrieval.evaluate import print_report
    from fingen.runs import evaluate

    report_ = evaluate(
        beir_dir, model or [], bm25, lang, out, split=split, resamples=resamples, seed=seed
    )
    print_report(report_, console)
    console.print(f"metrics: [bold]{report_['written_to']}[/]")


@app.command()
def train(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory (or its exports folder) with retrieval exports.")
    ],
    base: Annotated[
        str, typer.Option(help="Model to fine-tune: minilm, e5 or a sentence-transformers path.")
    ] = "minilm",
    epochs: Annotated[float, typer.Option(min=0.01, help="Passes over the train split.")] = 1.0,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate.")] = 2e-5,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Rows per batch (in-batch negatives).")
    ] = 32,
    hard_negatives: Annotated[
        int | None,
        typer.Option(min=0, help="Hard negatives per row (default: the export's n-tuple width)."),
    ] = None,
    cached: Annotated[
        bool, typer.Option(help="CachedMultipleNegativesRankingLoss (large batches, less memory).")
    ] = False,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many steps.")
    ] = None,
    eval_steps: Annotated[
        int | None, typer.Option(min=1, help="Also evaluate on the dev split every N steps.")
    ] = None,
    instruction: Annotated[
        str | None, typer.Option(help="Query prompt (default: the run's export instruction).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda when available).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of shuffling and initialization.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Model folder (default: RUN_DIR/models/<base>-ft)."),
    ] = None,
) -> None:
    """Fine-tune a bi-encoder on the run's train split (MultipleNegativesRankingLoss with the
    run's verified hard negatives, no duplicate texts in a batch) and compare it with the
    base model on the dev split. Writes a sentence-transformers model folder and
    train_info.json."""
    from fingen.console import console
    from fingen.train import TrainOptions, train_embedder

    options = TrainOptions(
        epochs=epochs, lr=lr, batch_size=batch_size, hard_negatives=hard_negatives,
        cached=cached, max_steps=max_steps, eval_steps=eval_steps, instruction=instruction,
        device=device, seed=seed,
    )  # fmt: skip
    result = train_embedder(run_dir, base=base, out=out, options=options)
    info = result.info
    console.print(
        f"trained {info['base']} on {info['rows']['total']} rows, {info['steps']} steps, "
        f"{info['time_s']['train']} s ({info['device']})"
    )
    for line in result.summary_lines():
        console.print(line)
    console.print(f"model: [bold]{result.model_dir}[/]  (train_info.json inside)")


@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with mined labels.")],
    sample: Annotated[int, typer.Option(min=1, help="Pairs judged for each estimate.")] = 50,
    judge: Annotated[
        str, typer.Option(help="llm (the run's llm config + --set) or cross_encoder.")
    ] = "llm",
    cross_encoder: Annotated[
        str | None, typer.Option(help="CrossEncoder model path (judge=cross_encoder).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="The run's model that judges (default: models.judge, else llm)."),
    ] = None,
    second_embedder: Annotated[
        str | None, typer.Option(help="Another embedder whose top-100 joins the pool (e5, path).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Estimate mined-label precision and the false-negative rate per level, with 95%
    intervals (FinCPRG reports ~4% false negatives after mining).

    Re-judges a sample of mined positives, and of a pool mining never judged: the mining
    embedder's ranks beyond its depth, BM25's top-20 and a second embedder. Writes
    audit.json. Use another model than the mining judge (models.judge by default).
    """
    from fingen.console import console
    from fingen.runs import audit as run_audit

    result = run_audit(
        run_dir, sample, judge=judge, model=model, cross_encoder=cross_encoder,
        second_embedder=second_embedder, overrides=set_ or [],
    )  # fmt: skip
    for level, entry in result["levels"].items():
        p, f = entry["mined_precision"], entry["false_negative_rate"]
        console.print(
            f"{level}: mined precision {p['precision']} {tuple(p['ci95'])} (n={p['judged']}); "
            f"false-negative rate {f['rate']} {tuple(f['ci95'])} (n={f['judged']}, "
            f"pool {f['pool']})"
        )
    console.print(f"judge: {result['judge']}; written to {run_dir / 'audit.json'}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds manifest.json).")],
    out: Annotated[str, typer.Option(help="File name inside the run directory.")] = "report.html",
) -> None:
    """Write a self-contained HTML report of a run (opens offline in any browser)."""
    from fingen.console import console
    from fingen.report import write_report

    path = write_report(_run_dir(run_dir), out)
    console.print(f"report: [bold]{path}[/]")


@app.command()
def publish(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds manifest.json).")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo, ORG/NAME.")],
    private: Annotated[bool, typer.Option(help="Create the repo as private.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Build RUN_DIR/hub/ and stop (no upload).")] = False,
    token_env: Annotated[str, typer.Option(help="Env var holding the hub token.")] = "HF_TOKEN",
) -> None:
    """Build a hub-ready folder (parquet per table + dataset card) and upload it.

    The token is read from the environment (HF_TOKEN by default) and never written anywhere.
    The folder loads back with datasets.load_dataset(RUN_DIR/hub, CONFIG).
    """
    from fingen.console import console
    from fingen.export.hub import publish_run

    result = publish_run(
        _run_dir(run_dir), repo_id, private=private, dry_run=dry_run, token_env=token_env
    )
    configs = ", ".join(f"{name}={rows}" for name, rows in result.configs.items())
    console.print(f"hub folder: [bold]{result.folder}[/] ({configs})")
    console.print(f"uploaded: {result.url}" if result.uploaded else "not uploaded (--dry-run)")


def _run_dir(path: Path) -> Path:
    from fingen.errors import InputError

    if not (path / "manifest.json").is_file():
        raise InputError("not a run directory (no manifest.json)", path=str(path))
    return path


_SIGNALS_SEEN: list[int] = []


def _interrupt(signum: int, frame: object) -> None:
    """First Ctrl-C / SIGTERM: stop cleanly (finished work is kept); a second: exit at once."""
    from fingen.errors import Interrupted

    if _SIGNALS_SEEN:
        sys.stderr.write("interrupted again: exiting now\n")
        os._exit(128 + signum)
    _SIGNALS_SEEN.append(signum)
    raise Interrupted(signum)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2, a budget stop exits 3, Ctrl-C
    130 and SIGTERM 143; no traceback."""
    import signal

    from fingen.errors import FingenError, Interrupted, UserError
    from fingen.redact import redact

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    # Models load from installed packages only (publish is the one command that goes online);
    # keep library progress bars out of ours.
    if sys.argv[1:2] != ["publish"]:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.setdefault(var, "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        code = app(standalone_mode=False)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code if isinstance(code, int) else 0)
    except (Interrupted, KeyboardInterrupt, typer.Abort) as exc:
        signum = getattr(exc, "signum", 2)
        sys.stderr.write("interrupted; run the same command again to resume\n")
        sys.exit(128 + signum)
    except UserError as exc:
        sys.stderr.write(f"error: {redact(str(exc))}\n")
        sys.exit(2)
    except FingenError as exc:
        sys.stderr.write(f"error: {type(exc).__name__}: {redact(str(exc))}\n")
        sys.exit(1)
    except Exception as exc:
        # Usage errors (bad option values, missing arguments) from typer's click arrive here
        # in non-standalone mode; typer vendors its own click, so match by shape.
        if callable(getattr(exc, "show", None)) and isinstance(
            getattr(exc, "exit_code", None), int
        ):
            exc.show()
            sys.exit(2)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)
