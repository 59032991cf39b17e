"""Fine-tune a sentence-transformers bi-encoder on a run's retrieval exports.

What it reads (all written by the ``export_retrieval`` stage, loaded as the files are):

- ``sentence_transformers/pairs/train.jsonl`` (anchor, positive) and
  ``sentence_transformers/triplets/train.jsonl`` (anchor, positive, negative): the train
  split's positives and the run's verified hard negatives, in the mined order;
- ``beir/`` (corpus, queries with their ``split``, qrels): the dev split, scored before and
  after training with ``fingen.retrieval.evaluate.evaluate_beir`` (the numbers of
  ``fingen eval``) and, with ``eval_steps``, during training with sentence-transformers'
  ``InformationRetrievalEvaluator``.

How it trains: ``MultipleNegativesRankingLoss`` (``CachedMultipleNegativesRankingLoss`` with
``cached``) on (anchor, positive, negative_1..k) rows, k = ``hard_negatives`` (default: the
export's n-tuple width); a (query, positive) whose group has fewer than k negatives trains as
a pair with in-batch negatives only (a second dataset of the same trainer). Batches never
hold the same text twice (``BatchSamplers.NO_DUPLICATES``: a query with two positives never
meets itself as a negative). The run's instruction prefix is the anchor prompt and is saved
in the model (``model.prompts = {"query": instruction, "document": ""}``), so
``SentenceTransformer(out).encode_query``, ``fingen eval --model out`` and mteb apply it.

Everything loads offline; CPU or GPU (bf16 where supported). Needs ``accelerate`` (the
``fingen[train]`` extra).

Example::

    result = train_embedder("outputs/run", base="minilm", options=TrainOptions(max_steps=50))
    print(result.summary_lines())
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fingen.errors import InputError, MissingExtraError
from fingen.train.data import TrainingData, load_training_data, resolve_exports
from fingen.train.scoring import (
    E5_TORCH_NAME,
    device_for,
    has_split,
    ir_evaluator,
    load_base,
    make_encoder,
    score,
)

__all__ = ["E5_TORCH_NAME", "TrainOptions", "TrainResult", "train_embedder"]


@dataclass(frozen=True)
class TrainOptions:
    """Training settings (the ``fingen train`` options and the ``train`` stage's params)."""

    epochs: float = 1.0
    lr: float = 2e-5
    batch_size: int = 32
    #: negatives per row; None: the export's n-tuple width; 0: pairs only
    hard_negatives: int | None = None
    cached: bool = False
    #: sub-batch of CachedMultipleNegativesRankingLoss (memory, not results)
    mini_batch_size: int = 16
    max_steps: int | None = None
    warmup_ratio: float = 0.1
    #: also score the dev split every N steps during training (InformationRetrievalEvaluator)
    eval_steps: int | None = None
    seed: int = 0
    #: cpu, cuda, cuda:1; None: cuda when available
    device: str | None = None
    #: query prompt; None: the run's export instruction; "": none
    instruction: str | None = None
    #: the split scored before and after training (None: skip)
    dev_split: str | None = "dev"
    show_progress: bool = True


@dataclass
class TrainResult:
    """The model folder and what ``train_info.json`` holds."""

    model_dir: Path
    info: dict[str, Any]

    @property
    def before(self) -> dict[str, dict[str, float]]:
        return (self.info.get("dev") or {}).get("before") or {}

    @property
    def after(self) -> dict[str, dict[str, float]]:
        return (self.info.get("dev") or {}).get("after") or {}

    def summary_lines(
        self, metrics: Sequence[str] = ("ndcg@10", "recall@10", "mrr@10")
    ) -> list[str]:
        """One line per dev level: ``all (12 queries): ndcg@10 0.41 -> 0.46 (+0.05) ...``."""
        dev = self.info.get("dev") or {}
        if not dev.get("after"):
            return [f"dev: not scored ({dev.get('note', 'no dev split')})"]
        lines = []
        for level, after in dev["after"].items():
            before = dev["before"].get(level, {})
            parts = [
                f"{m} {before.get(m, 0.0):.4f} -> {after[m]:.4f} ({after[m] - before.get(m, 0.0):+.4f})"
                for m in metrics
            ]
            lines.append(f"dev {level} ({after['queries']} queries): " + ", ".join(parts))
        prompted = (dev.get("before_prompted") or {}).get("all")
        if prompted:
            lines.append(
                f"dev all, base model with the query prompt (no training): "
                f"ndcg@10 {prompted['ndcg@10']:.4f}"
            )
        return lines


def _require_trainer_deps() -> None:
    for module, package in (("accelerate", "accelerate"), ("datasets", "datasets")):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(package, "train", "Training with sentence-transformers")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sentence-transformers", "transformers", "torch", "accelerate", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


# -- training ----------------------------------------------------------------------------------
def _slug(base: str) -> str:
    alias = base.strip().lower()
    return alias if alias in ("minilm", "e5") else (Path(base).name or "model")


def _prepare_out(out: Path) -> Path:
    """A fresh staging folder beside ``out``; refuses to replace a folder that is not a
    model folder fingen wrote."""
    if out.exists() and any(out.iterdir()) and not (out / "train_info.json").is_file():
        raise InputError("exists and is not a model folder written by fingen train", path=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def train_embedder(
    source: str | Path,
    base: str = "minilm",
    *,
    out: str | Path | None = None,
    options: TrainOptions | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Fine-tune ``base`` on the train split of a run's exports; score base and trained
    model on the dev split; write the model folder with ``train_info.json``.

    Args:
        source: a run directory or its exports folder.
        base: "minilm", "e5" (``intfloat/multilingual-e5-small`` from the local cache) or a
            sentence-transformers model folder.
        out: the model folder (default: ``<run>/models/<base>-ft``); replaced when it holds
            an earlier ``fingen train`` model.
        options: ``TrainOptions``.
        on_step: called after every optimizer step with ``(step, total_steps)`` (the
            trainer's own progress bar is off then).

    Raises:
        InputError: no exports, no training rows, or a base model not loadable offline.
        MissingExtraError: ``accelerate`` (sentence-transformers' trainer) is not installed.
    """
    opts = options or TrainOptions()
    src = resolve_exports(source)
    data = load_training_data(src.exports, opts.hard_negatives)
    if data.total == 0:
        raise InputError(
            "no training rows in the train split (no queries with positives there)",
            path=str(src.exports / "sentence_transformers"),
        )
    _require_trainer_deps()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    t_start = time.perf_counter()
    device = device_for(opts.device)
    model, base_name, base_prompts = load_base(base, device)
    instruction = opts.instruction if opts.instruction is not None else src.instruction
    query_prompt = instruction if instruction else base_prompts["query"]
    document_prompt = base_prompts["document"]
    out_dir = Path(out) if out is not None else (
        (src.run_dir or src.exports.parent) / "models" / f"{_slug(base)}-ft"
    )  # fmt: skip
    staging = _prepare_out(out_dir)

    beir = src.exports / "beir"
    split = opts.dev_split if opts.dev_split and has_split(beir, opts.dev_split) else None
    dev: dict[str, Any] = {"split": split, "before": {}, "after": {}, "delta": {}}
    t0 = time.perf_counter()
    if split:
        dev["before"] = score(
            beir, make_encoder(model, base_name, base_prompts["query"], document_prompt), split
        )
        if query_prompt != base_prompts["query"]:  # how much the prompt alone changes
            dev["before_prompted"] = score(
                beir,
                make_encoder(model, f"{base_name} + prompt", query_prompt, document_prompt),
                split,
            )
    else:
        dev["note"] = f"no '{opts.dev_split}' queries in {beir}" if opts.dev_split else "skipped"
    eval_before_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fingen-train-") as tmp:
        trainer = _trainer(model, data, opts, device, (query_prompt, document_prompt),
                           beir if split else None, split, on_step, tmp)  # fmt: skip
        output = trainer.train()
    train_s = time.perf_counter() - t0

    model.prompts = {"query": query_prompt, "document": document_prompt}
    if document_prompt:  # fingen's embedder asks for "passage"
        model.prompts["passage"] = document_prompt
    model.default_prompt_name = None
    model.save(str(staging))

    t0 = time.perf_counter()
    if split:
        dev["after"] = score(
            beir, make_encoder(model, str(out_dir), query_prompt, document_prompt), split
        )
        dev["delta"] = {
            level: {m: round(v - dev["before"].get(level, {}).get(m, 0.0), 5)
                    for m, v in metrics.items() if m != "queries"}
            for level, metrics in dev["after"].items()
        }  # fmt: skip
    eval_after_s = time.perf_counter() - t0
    dev["history"] = [
        {k: v for k, v in entry.items() if k == "step" or "eval_" in k}
        for entry in trainer.state.log_history
        if any(k.startswith("eval_") for k in entry)
    ]
    info = {
        "base": base_name,
        "base_arg": base,
        "model_dir": str(out_dir),
        "exports": str(src.exports),
        "run_dir": str(src.run_dir) if src.run_dir else None,
        "device": device,
        "params": {
            **asdict(opts),
            "hard_negatives_used": data.negatives,
            "loss": "CachedMultipleNegativesRankingLoss"
            if opts.cached
            else "MultipleNegativesRankingLoss",
            "batch_sampler": "no_duplicates",
        },
        "prompts": dict(model.prompts),
        "base_prompts": base_prompts,
        "rows": {
            "ntuples": len(data.ntuples),
            "pairs": len(data.pairs),
            "total": data.total,
            "negatives_per_row": data.negatives,
            "most_negatives_available": data.available,
        },
        "steps": int(trainer.state.global_step),
        "train_loss": round(float(output.training_loss), 6),
        "loss_history": [
            {"step": e["step"], "loss": round(float(e["loss"]), 6)}
            for e in trainer.state.log_history
            if "loss" in e and "step" in e
        ],
        "time_s": {
            "train": round(train_s, 2),
            "eval_before": round(eval_before_s, 2),
            "eval_after": round(eval_after_s, 2),
            "total": round(time.perf_counter() - t_start, 2),
        },
        "dev": dev,
        "versions": _versions(),
    }
    (staging / "train_info.json").write_text(
        json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return TrainResult(out_dir, info)


def _warmup(transformers_version: str, ratio: float) -> dict[str, float]:
    """transformers >= 5 takes the warmup ratio as a float ``warmup_steps`` (its
    ``warmup_ratio`` is deprecated); earlier versions take ``warmup_ratio``."""
    major = int(transformers_version.split(".")[0])
    return {"warmup_steps": ratio} if major >= 5 else {"warmup_ratio": ratio}


def _trainer(
    model: Any,
    data: TrainingData,
    opts: TrainOptions,
    device: str,
    prompt_pair: tuple[str, str],
    beir: Path | None,
    split: str | None,
    on_step: Callable[[int, int], None] | None,
    output_dir: str,
) -> Any:
    """The SentenceTransformerTrainer: NO_DUPLICATES batches, (Cached)MNRL, anchor prompt,
    optional IR evaluator on the dev split every ``eval_steps``."""
    import torch
    import transformers
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    try:  # sentence-transformers >= 6
        from sentence_transformers.base.sampler import BatchSamplers
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )
    except ImportError:  # 3.x - 5.x
        from sentence_transformers.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )
        from sentence_transformers.training_args import BatchSamplers

    query_prompt, document_prompt = prompt_pair
    prompts: dict[str, str] = {}
    if query_prompt:
        prompts["anchor"] = query_prompt
    if document_prompt:
        cols = ["positive"] + [f"negative_{i + 1}" for i in range(data.negatives)]
        prompts.update(dict.fromkeys(cols, document_prompt))
    evaluator = None
    if opts.eval_steps and beir is not None and split:
        evaluator = ir_evaluator(beir, split, query_prompt, document_prompt)
    cuda = device.startswith("cuda")
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps or -1,
        per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.lr,
        **_warmup(transformers.__version__, opts.warmup_ratio),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts=prompts or None,
        eval_strategy="steps" if evaluator is not None else "no",
        eval_steps=opts.eval_steps if evaluator is not None else None,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=opts.seed,
        data_seed=opts.seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        disable_tqdm=not opts.show_progress or on_step is not None,
        dataloader_num_workers=0,
    )
    if opts.cached:
        loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=opts.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model)

    class _Steps(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if on_step is not None:
                on_step(int(state.global_step), int(state.max_steps))

    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=data.datasets(),
        loss=loss,
        evaluator=evaluator,
        callbacks=[_Steps()],
    )
    # the logs go to train_info.json, not stdout: a bar without the per-step log lines
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:

        class _Bar(ProgressCallback):  # type: ignore[misc]
            def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                return None

        trainer.add_callback(_Bar())
    return trainer
