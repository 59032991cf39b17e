"""TRL takes the training exports as they are: one SFTTrainer, DPOTrainer and GRPOTrainer step.

A fake-backend CoT run (distill -> verify -> judge_reasoning -> route -> preference ->
export_training, the teacher of ``tests/test_route_preference.py``) writes the exports; the
packaged SmolLM2 GGUF, converted offline to a transformers model once per session, trains one
step on each train split on the CPU, GRPO with fingen's reward functions. About a minute on
2 idle cores; skipped when trl (the ``train`` extra: trl, accelerate, gguf) or the packaged
model (the ``local`` extra) is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fingen.config import StageConfig
from fingen.errors import FingenError
from fingen.pipeline import run_pipeline
from fingen.reasoning.reward import accuracy_reward, format_reward
from fingen.reasoning.route import ANSWER_FORMAT
from tests.llm_handlers import installed
from tests.test_route_preference import Q_NUM, _items_file, _pipeline, cot_model

trl = pytest.importorskip("trl", reason="trl is not installed (the train extra)")
pytest.importorskip("gguf", reason="gguf is not installed (the train extra): no GGUF loading")
datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

#: one step, on the CPU in fp32, nothing saved or reported (TRL's defaults: bf16, checkpoints)
COMMON: dict[str, Any] = {
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "activation_checkpointing": False,
    "seed": 0,
}
MAX_LENGTH = 160  # tiny, and longer than every prompt: DPO drops rows whose prompt does not fit


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The packaged SmolLM2-135M GGUF as a transformers model folder (dequantized, fp32)."""
    from fingen.llm.local import resolve_local_model

    try:
        gguf = resolve_local_model("smollm2")
    except FingenError as exc:
        pytest.skip(f"packaged SmolLM2 not available (the local extra): {exc}")
    out = tmp_path_factory.mktemp("smollm2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        options = {"gguf_file": gguf.name}
        tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, **options)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, **options, quantization_config=transformers.GgufConfig(dequantize=True)
        )
        model.save_pretrained(out)
        tok.save_pretrained(out)
        yield out


@pytest.fixture(scope="module")
def run(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fake CoT run; its export counts tokens with the model's tokenizer."""
    tmp = tmp_path_factory.mktemp("trl_run")
    params = {"items": "qa_source", "with_meta": True, "tokenizer": str(smollm2)}
    with installed(cot_model) as handler:
        config = _pipeline(handler, _items_file(tmp))
        stages = [*config.stages[:-1], StageConfig(stage="export_training", params=params)]
        result = run_pipeline(config.model_copy(update={"stages": stages}), tmp / "run")
    assert result.status == "complete"
    return result


@pytest.fixture(scope="module")
def tokenizer(smollm2: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(smollm2)


def _train(run: Any, kind: str) -> Any:
    split = run.stages["export_training"]["extra"]["exports"][kind]["files"]["train"]
    return datasets.load_dataset(
        "parquet", data_files=str(run.run_dir / split["parquet"]), split="train"
    )


def test_rows_render_with_the_chat_template_like_sft(run: Any, tokenizer: Any) -> None:
    """maybe_apply_chat_template treats all three kinds alike (conversational rows)."""
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    rendered = {}
    for kind in ("sft", "dpo", "rl"):
        row = _train(run, kind)[0]
        assert is_conversational(row), kind
        rendered[kind] = maybe_apply_chat_template(row, tokenizer)
    assert rendered["sft"]["text"].startswith("<|im_start|>")
    assert f"Question: {Q_NUM}\n\n{ANSWER_FORMAT['en']}<|im_end|>" in rendered["sft"]["text"]
    assert rendered["dpo"]["prompt"].endswith("<|im_start|>assistant\n")
    assert rendered["dpo"]["chosen"].startswith("<think>\nStep 1")
    assert rendered["rl"]["prompt"].endswith(
        f"{ANSWER_FORMAT['en']}<|im_end|>\n<|im_start|>assistant\n"
    )
    lengths = run.stages["export_training"]["extra"]["token_lengths"]
    assert lengths["counted_with"].startswith("tokenizer ")
    messages = _train(run, "sft")[0]["messages"]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert lengths["sft"]["max"] == len(ids)
    assert lengths["rl"]["max"] < MAX_LENGTH and lengths["dpo"]["max"] > lengths["sft"]["max"]


def test_one_sft_step(run: Any, smollm2: Path, tokenizer: Any, tmp_path: Path) -> None:
    config = trl.SFTConfig(output_dir=str(tmp_path), max_length=MAX_LENGTH, **COMMON)
    trainer = trl.SFTTrainer(
        model=str(smollm2), args=config, train_dataset=_train(run, "sft"),
        processing_class=tokenizer,
    )  # fmt: skip
    assert trainer.train().global_step == 1
    assert trainer.state.log_history[0]["loss"] > 0


def test_one_dpo_step(run: Any, smollm2: Path, tokenizer: Any, tmp_path: Path) -> None:
    train = _train(run, "dpo")
    assert train.num_rows == 3
    config = trl.DPOConfig(output_dir=str(tmp_path), max_length=MAX_LENGTH, **COMMON)
    trainer = trl.DPOTrainer(
        model=str(smollm2), args=config, train_dataset=train, processing_class=tokenizer
    )
    assert len(trainer.train_dataset) == 3  # no prompt was too long for max_length
    assert trainer.train().global_step == 1
    assert "rewards/chosen" in trainer.state.log_history[0]


def _spy(fn: Callable[..., list[float]], calls: list[dict[str, Any]]) -> Callable[..., list[float]]:
    def reward(**kwargs: Any) -> list[float]:
        values = fn(**kwargs)
        calls.append({**kwargs, "values": values})
        return values

    reward.__name__ = fn.__name__
    return reward


def test_one_grpo_step_with_fingens_rewards(
    run: Any, smollm2: Path, tokenizer: Any, tmp_path: Path
) -> None:
    train = _train(run, "rl")
    assert {"answer", "answer_type", "scale"} <= set(train.column_names)
    calls: list[dict[str, Any]] = []
    config = trl.GRPOConfig(
        output_dir=str(tmp_path), num_generations=2, max_completion_length=16, **COMMON
    )
    trainer = trl.GRPOTrainer(
        model=str(smollm2), args=config, train_dataset=train, processing_class=tokenizer,
        reward_funcs=[_spy(format_reward, calls), _spy(accuracy_reward, calls)],
    )  # fmt: skip
    assert trainer.train().global_step == 1
    assert {c["values"].__len__() for c in calls} == {2} and len(calls) == 2
    for call in calls:  # keyword-only, conversational completions, the answer columns
        assert all(c[0]["role"] == "assistant" for c in call["completions"])
        assert call["answer"] == [train[0]["answer"]] * 2
        assert call["answer_type"] == [train[0]["answer_type"]] * 2
        assert set(call["values"]) <= {0.0, 1.0}
    logged = json.dumps(trainer.state.log_history)
    assert "rewards/format_reward/mean" in logged and "rewards/accuracy_reward/mean" in logged
