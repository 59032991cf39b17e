"""Loaders over a corpus: directories, stable IDs, options, real data, Hugging Face datasets.

File formats and bad inputs are in tests/test_ingest_formats.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fingen.errors import InputError
from fingen.ingest import (
    CFBENCHMARK_FIELDS,
    FINANCEBENCH_FIELDS,
    FieldMap,
    IngestOptions,
    detect_lang,
    iter_documents,
    load_documents,
    load_hf,
)
from fingen.records import Document, Failure
from tests.ingest_helpers import EN_TEXT, ZH_TEXT, only_doc, write, write_jsonl

# --- directories, IDs, options ----------------------------------------------------------------


def make_corpus(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    write(root / "b.txt", EN_TEXT)
    write(root / "a.md", f"# A\n\n{EN_TEXT}")
    write(root / "sub" / "c.html", f"<p>{ZH_TEXT}</p>")
    write(root / "sub" / "deeper" / "d.txt", "Net income fell 2%.")
    write(root / ".hidden.txt", "skip me")
    write(root / ".git" / "config.txt", "skip me too")
    write_jsonl(root / "sub" / "rows.jsonl", [{"text": "Row one."}, {"text": "Row two."}])
    return root


def test_directory_is_walked_recursively_sorted_skipping_hidden(tmp_path: Path) -> None:
    docs, failures = load_documents(make_corpus(tmp_path / "corpus"))
    assert failures == []
    names = [Path(d.source).relative_to(tmp_path / "corpus").as_posix() for d in docs]
    assert names == [
        "a.md",
        "b.txt",
        "sub/c.html",
        "sub/rows.jsonl",
        "sub/rows.jsonl",
        "sub/deeper/d.txt",
    ]
    assert docs[2].lang == "zh"


def test_ids_are_stable_across_runs_and_locations(tmp_path: Path) -> None:
    first = make_corpus(tmp_path / "one")
    moved = shutil.copytree(first, tmp_path / "elsewhere" / "two")
    ids = [d.doc_id for d in load_documents(first)[0]]
    assert ids == [d.doc_id for d in load_documents(first)[0]]
    assert ids == [d.doc_id for d in load_documents(moved)[0]]
    assert len(set(ids)) == len(ids)


def test_limit_stops_after_n_documents_but_keeps_failures(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("{bad\n" + "".join(json.dumps({"text": f"Doc {i}."}) + "\n" for i in range(10)))
    items = list(iter_documents(path, options=IngestOptions(limit=3)))
    assert [i.reason if isinstance(i, Failure) else i.text for i in items] == [
        "malformed_json", "Doc 0.", "Doc 1.", "Doc 2.",
    ]  # fmt: skip


def test_language_is_detected_unless_forced(tmp_path: Path) -> None:
    assert detect_lang(ZH_TEXT) == "zh" and detect_lang(EN_TEXT) == "en"
    assert detect_lang("ACME 公司 reported revenue of $5bn for FY2023, up 3%.") == "en"
    assert only_doc(write(tmp_path / "zh.txt", ZH_TEXT), lang="en").lang == "en"


# --- real data through the generic JSONL loader ------------------------------------------------


def test_financebench_pages_load_with_a_field_mapping(shared_data: Path) -> None:
    path = shared_data / "financebench_pages" / "pages.jsonl.gz"
    opts = IngestOptions(fields=FINANCEBENCH_FIELDS, limit=3)
    docs, failures = load_documents(path, options=opts)
    assert failures == []
    assert [d.doc_id for d in docs] == ["3M_2018_10K#p0", "3M_2018_10K#p1", "3M_2018_10K#p2"]
    assert {d.title for d in docs} == {"3M_2018_10K"}
    assert [d.meta for d in docs] == [{"page": 0}, {"page": 1}, {"page": 2}]
    assert all(d.lang == "en" for d in docs) and "3M COMPANY" in docs[0].text


def test_cfbenchmark_rows_load_with_text_from_input(shared_data: Path) -> None:
    path = shared_data / "cfbenchmark_cn" / "risk.jsonl"
    opts = IngestOptions(fields=CFBENCHMARK_FIELDS, limit=5)
    docs, failures = load_documents(path, options=opts)
    assert failures == [] and len(docs) == 5
    assert docs[0].doc_id == "cfb-risk-0"
    assert all(d.lang == "zh" and set(d.meta) == {"instruction", "response"} for d in docs)
    hashed = IngestOptions(fields=FieldMap(text_field="input"), limit=5)
    ids = [d.doc_id for d in load_documents(path, options=hashed)[0]]
    assert ids == [d.doc_id for d in load_documents(path, options=hashed)[0]]
    assert len(set(ids)) == 5 and "cfb-risk-0" not in ids


# --- Hugging Face datasets (offline, local) ----------------------------------------------------


@pytest.fixture(scope="module")
def hf_rows() -> list[dict[str, object]]:
    return [
        {"text": EN_TEXT, "id": "a", "year": 2020},
        {"text": ZH_TEXT, "id": "b", "year": 2021},
        {"text": "", "id": "c", "year": 2022},
    ]


def test_load_hf_reads_a_saved_dataset_dict_by_split(
    tmp_path: Path, hf_rows: list[dict[str, object]]
) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(hf_rows)
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    items = list(load_hf(tmp_path / "dd", "train", FieldMap(id_field="id")))
    docs = [i for i in items if isinstance(i, Document)]
    assert [(d.doc_id, d.lang, d.meta) for d in docs] == [
        ("a", "en", {"year": 2020}),
        ("b", "zh", {"year": 2021}),
    ]
    assert [(f.item_id, f.reason) for f in items if isinstance(f, Failure)] == [
        ("dd:train:2", "empty")
    ]
    assert len(list(load_hf(tmp_path / "dd", "test"))) == 1
    with pytest.raises(InputError, match="no split"):
        load_hf(tmp_path / "dd", "validation")


def test_load_hf_reads_a_local_data_files_folder_with_stable_ids(
    tmp_path: Path, hf_rows: list[dict[str, object]]
) -> None:
    pytest.importorskip("datasets")
    folder = tmp_path / "files"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", hf_rows[:2])
    first = [d.doc_id for d in load_hf(folder, "train", options=IngestOptions(limit=1))]
    again = [d.doc_id for d in load_hf(folder, "train")]
    assert len(first) == 1 and len(again) == 2 and again[0] == first[0]
