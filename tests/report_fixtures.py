"""A small but complete run directory for the report, publish and browser tests.

``make_fixture_run`` writes it with the real record classes: renamed stage keys, a filter
that drops a query, direct/judged/mined labels of every grade (0-2), clusters, CoT samples, SFT/RL/DPO
records, failures, and document text that tries to inject HTML. ``Counts`` reads the counts
a rendered report shows; ``manifest_value`` finds the manifest's number for one of them.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from fingen.records import (
    CoTSample,
    Document,
    DPORecord,
    Failure,
    Passage,
    QAItem,
    Qrel,
    Query,
    RLRecord,
    Sentence,
    SFTRecord,
)

__all__ = ["INJECTION", "Counts", "make_fixture_run", "manifest_value"]

INJECTION = "<script>alert('pwned')</script><img src=x onerror=alert(1)>"


def _write(path: Path, records: list) -> None:
    path.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")


def _usage(requests: int, prompt: int, completion: int, cost: float) -> dict:
    tokens = {"prompt_tokens": prompt, "completion_tokens": completion, "cost": cost}
    return {"requests": requests, "cached": 1, "transport_retries": 0, "reasks": 0, **tokens}


def _entry(stage: str, ok: tuple[int, int], outputs: dict, **more: object) -> dict:
    inputs, succeeded = ok
    failures = more.pop("failures", {})
    return {
        "stage": stage,
        "status": "done",
        "inputs": inputs,
        "succeeded": succeeded,
        "failed": inputs - succeeded,
        "rejected_rows": 0,
        "outputs": outputs,
        "failures_by_reason": failures,
        "wall_s": 0.5,
        **more,
    }


def _query(qid: str, text: str, level: str, pid: str | None = None, **more: object) -> Query:
    origin = "fff000111222@fake-gen" if level == "topic" else "abc123def456@fake-gen"
    pids = [pid] if pid else []
    return Query(
        query_id=qid, text=text, level=level, origin=origin, source_passage_ids=pids, **more
    )  # type: ignore[arg-type]


def _qrel(qid: str, pid: str, score: int, kind: str, rationale: str | None = None) -> Qrel:
    return Qrel(
        query_id=qid,
        passage_id=pid,
        score=score,
        kind=kind,
        judge="fake-judge",
        rationale=rationale,
    )  # type: ignore[arg-type]


def _documents(licence: str | None) -> tuple[list[Document], list[Passage]]:
    meta = {"license": licence} if licence else {}
    docs = [
        Document(doc_id="d1", title="Acme 2023 annual report", text="Revenue grew 12%.", meta=meta),
        Document(doc_id="d2", title="Beta Bank Q3", text=f"NII rose. {INJECTION}", meta=meta),
    ]
    texts = [
        ("d1", "Revenue grew 12% to $4.1bn in 2023."),
        ("d1", "Operating margin fell to 8% on input costs."),
        ("d2", f"Net interest income rose 5%. {INJECTION}"),
        ("d2", "Loan losses were stable at 0.3% of loans."),
    ]
    passages = [
        Passage(
            passage_id=f"p{i + 1}",
            doc_id=d,
            text=t,
            order=i % 2,
            sentences=[Sentence(idx=0, start=0, end=len(t))],
        )
        for i, (d, t) in enumerate(texts)
    ]
    return docs, passages


def _reasoning(root: Path) -> None:
    items = [
        QAItem(
            qa_id="a1",
            question="What is 10% of 50?",
            gold_answer="5",
            source="finqa",
            context="x | 50",
        ),
        QAItem(qa_id="a2", question="Is revenue up?", gold_answer="yes", source="tatqa"),
    ]
    samples = [
        CoTSample(sample_id="s1", qa_id="a1", reasoning="10% of 50 is 5.", answer="5"),
        CoTSample(sample_id="s2", qa_id="a1", sample_idx=1, reasoning="It is 6.", answer="6"),
        CoTSample(sample_id="s3", qa_id="a2", reasoning=f"Yes. {INJECTION}", answer="yes"),
    ]
    verified = [s.model_copy(update={"correct": s.answer != "6"}) for s in samples]
    quality = [{"quality": True}, {}, {"quality": False, "reasons": ["repetitive"]}]
    judged = [s.model_copy(update=q) for s, q in zip(verified, quality, strict=True)]
    answer = "<think>\n10% of 50 is 5.\n</think>\n<answer>\n5\n</answer>"
    chat = [
        {"role": "user", "content": "What is 10% of 50?"},
        {"role": "assistant", "content": answer},
    ]
    _write(root / "qa_source.jsonl", items)
    _write(root / "distill.jsonl", samples)
    _write(root / "verify.jsonl", verified)
    _write(root / "judge_reasoning.jsonl", judged)
    _write(root / "route.sft.jsonl", [SFTRecord(messages=chat, source="finqa", qa_id="a1")])
    _write(
        root / "route.rl.jsonl",
        [RLRecord(prompt="Is revenue up?", answer="yes", source="tatqa", qa_id="a2")],
    )
    pair = DPORecord(
        prompt="What is 10% of 50?", chosen="5", rejected="6", rejected_reason="wrong", qa_id="a1"
    )
    _write(root / "preference.jsonl", [pair])


def make_fixture_run(root: Path, *, licence: str | None = "cc-by-4.0") -> Path:
    """A small run directory written with the real records (see the module doc)."""
    root.mkdir(parents=True, exist_ok=True)
    docs, passages = _documents(licence)
    queries = [
        _query("qs1", "How much did Acme revenue grow in 2023?", "sentence", "p1", answer="12%",
               evidence_sentence_ids=[0], evidence="Revenue grew 12%"),
        _query("qs2", f"What happened to net interest income? {INJECTION}", "sentence", "p3"),
        _query("qs3", "Were loan losses stable?", "sentence", "p4"),
        _query("qp1", "Why did Acme's operating margin fall in 2023?", "passage", "p2"),
        _query("qdrop", "Revenue?", "passage", "p1"),
    ]  # fmt: skip
    topic = _query(
        "qt1",
        "How did industrials and banks fare in 2023?",
        "topic",
        None,
        source_doc_ids=["d1", "d2"],
    )
    cluster = {"cluster_id": "c1", "industry": "mixed", "period": "2023", "topic": 0,
               "words": ["revenue", "income"], "doc_ids": ["d1", "d2"],
               "titles": [docs[0].title, f"Beta Bank {INJECTION}"]}  # fmt: skip
    _write(root / "ingest.jsonl", docs)
    _write(root / "chunk.jsonl", passages)
    _write(root / "gen.queries.jsonl", queries)  # bottom_up renamed "gen"
    _write(
        root / "gen.qrels.jsonl",
        [Qrel(query_id=q.query_id, passage_id=q.source_passage_ids[0]) for q in queries],
    )
    _write(root / "gen.failures.jsonl", [Failure(stage="gen", item_id="p9", reason="bad_span")])
    (root / "topics.clusters.jsonl").write_text(json.dumps(cluster) + "\n", encoding="utf-8")
    _write(root / "top_down.queries.jsonl", [topic])
    _write(
        root / "top_down.qrels.jsonl",
        [_qrel("qt1", "p1", 2, "judged"), _qrel("qt1", "p3", 1, "judged")],
    )
    _write(
        root / "mine.jsonl",
        [_qrel("qs1", "p2", 1, "mined", "mentions 2023 results"), _qrel("qt1", "p4", 2, "mined")],
    )
    _write(root / "mine.negatives.jsonl", [_qrel("qs3", "p1", 0, "mined", "about revenue")])
    _write(root / "filter.queries.jsonl", [*queries[:-1], topic])
    _write(root / "filter.rejected.jsonl", [queries[-1]])
    _reasoning(root)
    stages = {
        "ingest": _entry("ingest", (2, 2), {"main": 2}, kinds={"main": "document"}),
        "chunk": _entry("chunk", (2, 2), {"main": 4}, kinds={"main": "passage"}),
        "gen": _entry("bottom_up", (5, 4), {"queries": 5, "qrels": 5, "failures": 1},
                      failures={"bad_span": 1}, usage=_usage(5, 1200, 400, 0.0123),
                      kinds={"queries": "query", "qrels": "qrel"}),
        "topics": _entry("topics", (2, 2), {"main": 2, "clusters": 1}, kinds={"clusters": "cluster"}),
        "top_down": _entry("top_down", (1, 1), {"queries": 1, "qrels": 2}, usage=_usage(3, 900, 150, 0.004),
                           kinds={"queries": "query", "qrels": "qrel"}),
        "mine": _entry("mine", (6, 6), {"main": 2, "negatives": 1}, usage=_usage(8, 3000, 200, 0.01),
                       kinds={"main": "qrel", "negatives": "qrel"}),
        "filter": _entry("filter", (6, 5), {"queries": 5, "rejected": 1}, failures={"too_short": 1},
                         kinds={"queries": "query"}, replaces=["queries"]),
        "qa_source": _entry("qa_source", (2, 2), {"main": 2}, kinds={"main": "qa"}),
        "distill": _entry("distill", (2, 2), {"main": 3}, usage=_usage(3, 300, 900, 0.02), kinds={"main": "cot"}),
        "verify": _entry("verify", (3, 3), {"main": 3}, kinds={"main": "cot"}),
        "judge_reasoning": _entry("judge_reasoning", (3, 3), {"main": 3}, usage=_usage(2, 500, 60, 0.001),
                                  kinds={"main": "cot"}),
        "route": _entry("route", (2, 2), {"sft": 1, "rl": 1}, kinds={"sft": "sft", "rl": "rl"}),
        "preference": _entry("preference", (2, 2), {"main": 1}, kinds={"main": "dpo"}),
    }  # fmt: skip
    manifest = {
        "pipeline": "fixture", "run_dir": str(root), "status": "complete",
        "started": "2025-01-01T00:00:00+00:00", "finished": "2025-01-01T00:01:00+00:00",
        "wall_s": 60.0, "config": {"name": "fixture", "lang": "en"},
        "versions": {"python": "3.11", "fingen": "0.1.0"},
        "llm": {"backend": "fake", "model": "fake-gen"}, "embedder": "minilm",
        "prompts": {"bottom_up.en": "a" * 64, "top_down.en": "b" * 64}, "stages": stages,
    }  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return root


class Counts(HTMLParser):
    """Collects ``data-count`` keys with their ``data-value`` and text, and every script."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: list[tuple[str, str, str]] = []
        self.scripts: list[dict[str, str | None]] = []
        self._open: list[tuple[str, str]] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
        if "data-count" in a:
            self._open.append((a["data-count"] or "", a.get("data-value") or ""))
            self._text = []

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._open:
            key, value = self._open.pop()
            self.counts.append((key, value, "".join(self._text)))


def manifest_value(manifest: dict, key: str) -> float | None:
    """The manifest's number for a ``stage.*`` / ``totals.*`` report key (None: not there)."""
    if key.startswith("totals."):
        return manifest.get("totals", {}).get(key.split(".", 1)[1])
    if not key.startswith("stage."):
        return None
    _, stage_key, rest = key.split(".", 2)
    entry = manifest["stages"][stage_key]
    field, _, sub = rest.partition(".")
    if field == "usage":
        return entry["usage"][sub]
    return entry[field][sub] if sub else entry.get(field, 0)
