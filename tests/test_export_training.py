"""Training exports: conversational rows for TRL, split by source document, loading back with
``datasets`` (JSON and parquet) with the declared Features; token lengths for max_length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fingen.config import LLMConfig, PipelineConfig, StageConfig
from fingen.errors import ConfigError
from fingen.export.training import (
    item_document,
    length_counter,
    split_key,
    token_lengths,
    training_columns,
    training_dataset,
    training_features,
    training_rows,
    training_splits,
    write_training,
)
from fingen.pipeline import run_pipeline
from fingen.records import DPORecord, QAItem, RLRecord, SFTRecord
from fingen.splits import SplitConfig
from fingen.store import RunStore

datasets = pytest.importorskip("datasets")

SFT = [
    SFTRecord(
        messages=[
            {"role": "user", "content": "Question: What is 5829 - 5735?"},
            {"role": "assistant", "content": "<think>\n5829 - 5735 = 94\n</think>\n<answer>\n94\n</answer>"},
        ],
        source="finqa",
        qa_id="q1",
    ),
    SFTRecord(messages=[{"role": "user", "content": "问题：利润增长了吗？"},
                        {"role": "assistant", "content": "<think>\n是\n</think>\n<answer>\n是\n</answer>"}]),
]  # fmt: skip
DPO = [
    DPORecord(prompt="Q?", chosen="<think>\na\n</think>\n<answer>\n1\n</answer>",
              rejected="<think>\na a a a", rejected_reason="overlong:length", qa_id="q1"),
]  # fmt: skip
RL = [
    RLRecord(prompt="Question: growth?", answer="9.86", source="tatqa", qa_id="q2"),
    RLRecord(prompt="Question: up?", answer="yes", source="finqa", qa_id=None),
]
ITEMS = {
    "q2": QAItem(qa_id="q2", question="growth?", gold_answer="9.86", answer_type="percent",
                 source="tatqa", meta={"scale": "percent"}),
}  # fmt: skip


def _load(path: Path) -> datasets.Dataset:
    kind = "json" if path.suffix == ".jsonl" else "parquet"
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("kind", "records", "options"),
    [
        ("sft", SFT, {}),
        ("sft", SFT, {"with_meta": True}),
        ("dpo", DPO, {}),
        ("dpo", DPO, {"with_meta": True}),
        ("rl", RL, {}),
        ("rl", RL, {"with_meta": True, "items": ITEMS}),
    ],
)
def test_files_load_back_with_the_declared_features(
    tmp_path: Path, kind: str, records: list, options: dict
) -> None:
    result = write_training(kind, records, tmp_path, **options)
    features = training_features(kind, with_meta=options.get("with_meta", False),
                                 answer_info="items" in options)  # fmt: skip
    assert result.rows == len(records) and result.splits == {"train": len(records)}
    assert set(result.paths) == {"train"} and set(result.paths["train"]) == {"jsonl", "parquet"}
    assert result.paths["train"]["jsonl"] == tmp_path / kind / "train.jsonl"
    for path in result.paths["train"].values():
        loaded = _load(path)
        assert loaded.features == features, path.name  # JSON inference gives the same types
        assert loaded.num_rows == len(records)
    in_memory = training_dataset(kind, records, **options)
    assert in_memory.features == features
    assert in_memory.to_list() == _load(result.paths["train"]["parquet"]).to_list()


def test_columns_are_exactly_the_trainer_formats() -> None:
    assert training_columns("sft") == ["messages"]
    assert training_columns("dpo") == ["prompt", "chosen", "rejected"]
    assert training_columns("rl") == ["prompt", "answer"]
    assert training_columns("rl", answer_info=True, with_meta=True) == [
        "prompt", "answer", "answer_type", "scale", "source", "qa_id",
    ]  # fmt: skip
    rows = training_dataset("rl", RL, items=ITEMS, with_meta=True).to_list()
    assert rows[0] == {"prompt": user("Question: growth?"), "answer": "9.86",
                       "answer_type": "percent", "scale": "percent", "source": "tatqa",
                       "qa_id": "q2"}  # fmt: skip
    assert rows[1]["answer_type"] == "" and rows[1]["qa_id"] == ""
    sft = training_dataset("sft", SFT).to_list()
    assert sft[1]["messages"][0] == {"role": "user", "content": "问题：利润增长了吗？"}


def test_every_kind_is_conversational_like_sft() -> None:
    """TRL's is_conversational: the first of prompt/chosen/rejected/completion/messages is a
    list of dicts with a role; DPO and RL prompts are one user turn, answers assistant turns."""
    dpo = training_dataset("dpo", DPO).to_list()[0]
    assert dpo == {"prompt": user("Q?"), "chosen": assistant(DPO[0].chosen),
                   "rejected": assistant("<think>\na a a a")}  # fmt: skip
    for kind, records in (("sft", SFT), ("dpo", DPO), ("rl", RL)):
        for row in training_rows(kind, records):
            first = next(row[k] for k in ("prompt", "messages") if k in row)
            assert isinstance(first, list) and "role" in first[0], kind
    features = training_features("dpo")
    assert features["prompt"] == features["chosen"] == training_features("sft")["messages"]


# -- splits by source document ------------------------------------------------------------------
def _item(qa_id: str, **meta: object) -> QAItem:
    return QAItem(qa_id=qa_id, question=f"{qa_id}?", gold_answer="1", meta=dict(meta))


def test_the_split_key_is_the_items_source_document() -> None:
    assert item_document(_item("a", id="ADI/2009/page_49.pdf-1")) == "ADI/2009"
    assert item_document(_item("b", filename="ADI/2009/page_50.pdf")) == "ADI/2009"
    assert item_document(_item("c", conversation_id="Single_ADI/2009/page_49.pdf-3")) == "ADI/2009"
    assert item_document(_item("d", doc_id="doc-7", source_id="doc-7#p2")) == "doc-7"
    assert item_document(_item("e", id="uid-3", table_uid="t-9")) == "t-9"
    assert item_document(_item("f", id="12")) is None
    items = {"a": _item("a", id="ADI/2009/page_49.pdf-1"), "f": _item("f", id="12")}
    rec = RLRecord(prompt="p", answer="1", qa_id="a")
    assert split_key(rec, items) == "ADI/2009"
    assert split_key(rec.model_copy(update={"qa_id": "f"}), items) == "f"
    assert split_key(rec.model_copy(update={"qa_id": None}), items) == "p"
    assert split_key(SFT[1]) == "问题：利润增长了吗？"


def _filing_records(n: int) -> tuple[dict[str, QAItem], list, list, list]:
    """n filings with two questions each; every question has SFT, two DPO pairs and RL rows."""
    items = {
        f"q{i}-{page}": _item(f"q{i}-{page}", id=f"T{i}/2019/page_{page}.pdf-1", scale="")
        for i in range(n)
        for page in (1, 2)
    }
    sft = [SFTRecord(messages=[*user(f"{q}?"), *assistant("<think>\nx\n</think>\n<answer>\n1\n</answer>")],
                     qa_id=q) for q in items]  # fmt: skip
    dpo = [DPORecord(prompt=f"{q}?", chosen="<think>\nx\n</think>\n<answer>\n1\n</answer>",
                     rejected=f"<think>\n{'y ' * k}", qa_id=q)
           for q in items for k in (1, 2)]  # fmt: skip
    rl = [RLRecord(prompt=f"{q}?", answer="1", qa_id=q) for q in items]
    return items, sft, dpo, rl


def test_every_row_of_one_document_lands_in_one_split(tmp_path: Path) -> None:
    items, sft, dpo, rl = _filing_records(12)
    splits = training_splits([*sft, *dpo, *rl], SplitConfig(dev=0.3, seed=1), items)
    assert set(splits) == {f"T{i}/2019" for i in range(12)}
    assert set(splits.values()) == {"train", "dev"}
    seen: dict[str, set[str]] = {}
    for kind, records in (("sft", sft), ("dpo", dpo), ("rl", rl)):
        result = write_training(kind, records, tmp_path, items=items, splits=splits,
                                with_meta=True)  # fmt: skip
        assert set(result.paths) == {"train", "dev"} and sum(result.splits.values()) == len(records)
        for split, paths in result.paths.items():
            for row in _load(paths["jsonl"]).to_list():
                seen.setdefault(items[row["qa_id"]].meta["id"].split("/page")[0], set()).add(split)
    assert all(len(s) == 1 for s in seen.values()) and len(seen) == 12
    # the stage's way to load both splits, and the folder as a whole (dev -> "validation")
    base = tmp_path / "dpo"
    both = datasets.load_dataset(
        "parquet",
        data_files={"train": str(base / "train.parquet"), "dev": str(base / "dev.parquet")},
    )
    assert both["dev"].features == training_features("dpo", with_meta=True)
    assert both["train"].num_rows + both["dev"].num_rows == len(dpo)
    folder = datasets.load_dataset(str(base))
    assert set(folder) == {"train", "validation"}
    assert folder["validation"].to_list() == both["dev"].to_list()


def test_a_small_run_still_gets_a_dev_split_and_parquet_folders_load(tmp_path: Path) -> None:
    items, sft, _, rl = _filing_records(2)  # two documents: a 10 % draw alone may give no dev
    splits = training_splits([*sft, *rl], SplitConfig(dev=0.1), items)
    assert sorted(splits.values()) == ["dev", "train"]
    write_training("rl", rl, tmp_path, items=items, splits=splits, formats=["parquet"])
    loaded = datasets.load_dataset("parquet", data_dir=str(tmp_path / "rl"))
    assert {k: v.num_rows for k, v in loaded.items()} == {"train": 2, "validation": 2}
    assert loaded["train"].features == training_features("rl", answer_info=True)
    # a later export without a dev split leaves no stale dev file behind
    write_training("rl", rl, tmp_path, formats=["parquet"])
    assert sorted(p.name for p in (tmp_path / "rl").iterdir()) == ["train.parquet"]
    assert training_splits(rl, SplitConfig(dev=0.0), items) == dict.fromkeys(splits, "train")


# -- token lengths --------------------------------------------------------------------------------
def test_token_lengths_fall_back_to_characters() -> None:
    count, how = length_counter(None)
    assert how == "characters/4 (no tokenizer named)"
    rows = list(training_rows("dpo", DPO))
    chars = len("Q?") + len(DPO[0].chosen)  # the chosen answer is the longer one
    assert token_lengths("dpo", rows, count) == {
        "of": "prompt + longer of chosen/rejected", "rows": 1, "max": -(-chars // 4),
        "p95": -(-chars // 4),
    }  # fmt: skip
    lengths = [count(user("x" * n)) for n in range(1, 41)]
    rows = [{"messages": user("x" * n)} for n in range(1, 41)]
    assert token_lengths("sft", rows, count) == {
        "of": "messages", "rows": 40, "max": 10, "p95": sorted(lengths)[37],
    }  # fmt: skip
    assert token_lengths("rl", [], count) == {"of": "prompt", "rows": 0, "max": 0, "p95": 0}
    count, how = length_counter("no-such-org/no-such-tokenizer")
    assert how.startswith("characters/4 (tokenizer 'no-such-org/no-such-tokenizer' not loaded")
    assert count(user("abcdefgh")) == 2


def test_token_lengths_with_a_local_tokenizer(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<user>", "<assistant>", "what", "is", "it", "?", "one", "two"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    tok.chat_template = "{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
    tok.save_pretrained(tmp_path / "tok")
    count, how = length_counter(str(tmp_path / "tok"))
    assert how == f"tokenizer {tmp_path / 'tok'}"
    conversation = [*user("what is it ?"), *assistant("one two")]
    assert count(conversation) == 8  # <user> what is it ? <assistant> one two
    assert count(user("what")) == 2


# -- the stage ------------------------------------------------------------------------------------
def test_bad_kinds_records_and_empty_sets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed"):
        training_columns("ppo")
    with pytest.raises(TypeError, match="RLRecord"):
        write_training("sft", RL, tmp_path)
    with pytest.raises(ValueError, match="format"):
        write_training("rl", RL, tmp_path, formats=["csv"])  # type: ignore[list-item]
    empty = write_training("dpo", [], tmp_path)
    assert empty.rows == 0 and empty.paths == {} and not list(tmp_path.iterdir())
    assert training_dataset("dpo", []).num_rows == 0


def _stage_run(run_dir: Path, params: dict, split: SplitConfig | None = None) -> object:
    config = PipelineConfig(
        name="export_test",
        llm=LLMConfig(backend="fake"),
        split=split or SplitConfig(),
        stages=[StageConfig(stage="export_training", params=params)],
    )
    return run_pipeline(config, run_dir)


def _store(root: Path, records: dict[tuple[str, str], list]) -> RunStore:
    store = RunStore(root)
    for (stage, output), recs in records.items():
        writer = store.writer(stage, output)
        writer.write_all(recs)
        writer.commit()
    return store


def test_stage_exports_what_route_and_preference_wrote(tmp_path: Path) -> None:
    store = _store(tmp_path / "run", {("route", "sft"): SFT, ("route", "rl"): RL,
                                      ("preference", ""): DPO})  # fmt: skip
    old = store.root / "exports/training"
    (old / "dpo").mkdir(parents=True)
    for stale in (old / "dpo.jsonl", old / "sft.parquet", old / "dpo/dev.jsonl"):
        stale.write_text("{}\n")  # the old flat layout and a split this run does not have
    refs = {"sft": "route.sft", "rl": "route.rl", "dpo": "preference"}
    result = _stage_run(store.root, {"formats": ["parquet"], **refs}, SplitConfig(dev=0.0))
    entry = result.stages["export_training"]  # type: ignore[attr-defined]
    assert entry["inputs"] == entry["succeeded"] == 5
    extra = entry["extra"]
    exports = extra["exports"]
    assert {k: v["rows"] for k, v in exports.items()} == {"sft": 2, "dpo": 1, "rl": 2}
    assert exports["dpo"]["splits"] == {"train": 1}
    assert exports["dpo"]["files"] == {"train": {"parquet": "exports/training/dpo/train.parquet"}}
    dpo = _load(store.root / "exports/training/dpo/train.parquet")
    assert dpo.column_names == ["prompt", "chosen", "rejected"]
    assert dpo[0]["prompt"] == user("Q?")
    assert sorted(p.relative_to(old).as_posix() for p in old.rglob("*") if p.is_file()) == [
        "dpo/train.parquet", "rl/train.parquet", "sft/train.parquet",
    ]  # fmt: skip
    lengths = extra["token_lengths"]
    assert lengths["counted_with"] == "characters/4 (no tokenizer named)"
    assert lengths["dpo"]["max"] == -(-(len("Q?") + len(DPO[0].chosen)) // 4)
    assert set(lengths) == {"counted_with", "sft", "dpo", "rl"}
    assert extra["split"] == {"dev": 0.0, "test": 0.0, "seed": 0, "groups": 4, "by_document": 0}


def test_stage_splits_by_the_run_items_documents(tmp_path: Path) -> None:
    items, sft, dpo, rl = _filing_records(10)
    store = _store(tmp_path / "run", {("qa_source", ""): list(items.values()),
                                      ("route", "sft"): sft, ("route", "rl"): rl,
                                      ("preference", ""): dpo})  # fmt: skip
    refs = {"sft": "route.sft", "rl": "route.rl", "dpo": "preference", "items": "qa_source"}
    params = {"with_meta": True, "tokenizer": "no-such/tokenizer", **refs}
    result = _stage_run(store.root, params, SplitConfig(dev=0.3))
    extra = result.stages["export_training"]["extra"]  # type: ignore[attr-defined]
    assert extra["split"]["groups"] == extra["split"]["by_document"] == 10
    assert "not loaded" in extra["token_lengths"]["counted_with"]
    split_of: dict[str, str] = {}
    for kind in ("sft", "dpo", "rl"):
        assert set(extra["exports"][kind]["files"]) == {"train", "dev"}
        for split in ("train", "dev"):
            path = store.root / "exports/training" / kind / f"{split}.jsonl"
            for line in path.read_text(encoding="utf-8").splitlines():
                doc = json.loads(line)["qa_id"].split("-")[0]
                assert split_of.setdefault(doc, split) == split, (kind, doc)
    rl_cols = _load(store.root / "exports/training/rl/train.parquet").column_names
    assert rl_cols == ["prompt", "answer", "answer_type", "scale", "source", "qa_id"]


def test_stage_without_anything_to_export_names_the_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to export"):
        _stage_run(tmp_path / "run", {})
