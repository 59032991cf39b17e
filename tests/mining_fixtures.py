"""Shared by the retrieval tests (mining, filters, negatives, exports, evaluation): a
bag-of-words embedder, a small financial corpus with queries and direct labels, run-directory
writers, a pipeline runner on the fake backend, and the judge table the mining tests grade by.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingen.config import PipelineConfig
from fingen.embed.base import l2_normalize
from fingen.llm.fake import Handler
from fingen.pipeline import RunResult, run_pipeline
from fingen.records import Passage, Qrel, Query, content_id
from fingen.store import iter_jsonl
from tests.llm_handlers import fake_llm, installed

__all__ = [
    "DOCS",
    "EXPLICIT",
    "JUDGE_TABLE",
    "QUERIES",
    "BagEmbedder",
    "make_passages",
    "make_queries",
    "pid",
    "qid",
    "read",
    "register_bag",
    "run",
    "write_records",
    "write_upstream",
]


class BagEmbedder:
    """Deterministic bag-of-words vectors (hashed words): overlapping texts are close."""

    name = "bag"
    dim = 256

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: str = "passage",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                if len(word) > 2:
                    out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        return l2_normalize(out)


def register_bag(monkeypatch: pytest.MonkeyPatch) -> BagEmbedder:
    """Register the alias "bag" so pipelines can use ``embedder: {model: bag}``."""
    from fingen.embed.models import EMBEDDERS

    monkeypatch.setitem(EMBEDDERS, "bag", lambda **kw: BagEmbedder())
    return BagEmbedder()


DOCS = {
    "acme": (
        "Acme Corp 2023 Annual Report",
        [
            "Acme Corp reported total revenue of $5.2 billion in fiscal 2023, up 8% on 2022.",
            "Revenue growth at Acme Corp came from higher cloud subscription sales in America.",
            "Acme Corp's operating margin narrowed to 12% because of higher wage costs.",
            "The board of Acme Corp approved a quarterly dividend of $0.40 per share.",
        ],
    ),
    "beta": (
        "Beta Bank 2023 Annual Report",
        [
            "Beta Bank's net interest income rose to $3.1 billion in 2023 as rates increased.",
            "Beta Bank's loan loss provisions increased to $400 million on weaker credit.",
            "Beta Bank kept its common equity tier 1 ratio at 13.5% at year end.",
        ],
    ),
    "gamma": (
        "Gamma Energy 2023 Report",
        [
            "Gamma Energy produced 420,000 barrels of oil equivalent per day in 2023.",
            "Gamma Energy's capital expenditure totaled $2.5 billion on offshore projects.",
            "Gamma Energy expects oil production to grow 3% in 2024.",
        ],
    ),
}

# (query text, level, doc, passage order of the direct label)
QUERIES = [
    ("What was Acme Corp's total revenue in fiscal 2023?", "sentence", "acme", 0),
    ("What drove revenue growth at Acme Corp?", "sentence", "acme", 1),
    ("How did Acme Corp's operating margin change and why?", "passage", "acme", 2),
    ("What was Beta Bank's net interest income in 2023?", "sentence", "beta", 0),
    ("What was Beta Bank's net interest income for 2023?", "sentence", "beta", 0),  # near-dup
    ("How much oil did Gamma Energy produce per day in 2023?", "sentence", "gamma", 0),
]

# Acme revenue: the cloud-sales passage answers "what drove revenue" fully, the revenue figure
# partly; everything else is unrelated (for ``tests.llm_handlers.judge_table``).
JUDGE_TABLE = {
    ("What was Acme Corp's total revenue", "cloud subscription"): 1,
    ("What drove revenue growth at Acme", "total revenue of $5.2"): 2,
    ("How did Acme Corp's operating margin", "higher cloud subscription"): 1,
}

EXPLICIT = {"passages": "chunk", "queries": ["bottom_up.queries"], "qrels": ["bottom_up.qrels"]}


def make_passages() -> list[Passage]:
    out = []
    for doc, (title, texts) in DOCS.items():
        for i, text in enumerate(texts):
            pid = content_id(doc, i, prefix="p-")
            out.append(Passage(passage_id=pid, doc_id=doc, text=text, order=i, title=title))
    return out


def pid(doc: str, order: int) -> str:
    return content_id(doc, order, prefix="p-")


def make_queries() -> tuple[list[Query], list[Qrel]]:
    queries, qrels = [], []
    for text, level, doc, order in QUERIES:
        q = Query(
            query_id=content_id(text, level, prefix="q-"),
            text=text,
            level=level,  # type: ignore[arg-type]
            source_passage_ids=[pid(doc, order)],
            source_doc_ids=[doc],
        )
        queries.append(q)
        qrels.append(Qrel(query_id=q.query_id, passage_id=pid(doc, order), kind="direct"))
    return queries, qrels


def qid(text: str) -> str:
    level = next(lv for t, lv, _, _ in QUERIES if t == text)
    return content_id(text, level, prefix="q-")


def write_records(path: Path, records: Sequence[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")


def write_upstream(run_dir: Path) -> tuple[list[Passage], list[Query], list[Qrel]]:
    """chunk.jsonl + bottom_up.queries/qrels.jsonl, as the upstream stages would leave them."""
    passages = make_passages()
    queries, qrels = make_queries()
    write_records(run_dir / "chunk.jsonl", passages)
    write_records(run_dir / "bottom_up.queries.jsonl", queries)
    write_records(run_dir / "bottom_up.qrels.jsonl", qrels)
    stages = {
        "chunk": {"stage": "chunk", "status": "done", "kinds": {"main": "passage"}},
        "bottom_up": {"stage": "bottom_up", "status": "done",
                      "kinds": {"queries": "query", "qrels": "qrel"}},
    }  # fmt: skip
    (run_dir / "manifest.json").write_text(json.dumps({"stages": stages}), encoding="utf-8")
    return passages, queries, qrels


def run(
    tmp_path: Path,
    stages: list[dict[str, Any]],
    *,
    handler: Handler | None = None,
    embedder: str = "bag",
    lang: str = "en",
    **settings: Any,
) -> RunResult:
    """Run ``stages`` into ``tmp_path/run``; the LLM is the fake backend answering from
    ``handler`` (model "judge-m"), or its schema-minimal default without one. ``settings``
    are further top-level pipeline keys (``split``, ``relevance``, ...)."""

    def go(llm: dict[str, Any]) -> RunResult:
        config = PipelineConfig.model_validate(
            {"name": "t", "lang": lang, "llm": llm, "embedder": {"model": embedder},
             "stages": stages, **settings}
        )  # fmt: skip
        return run_pipeline(config, tmp_path / "run")

    if handler is None:
        return go({"backend": "fake"})
    with installed(handler) as path:
        return go(fake_llm(path, model="judge-m"))


def read(run_dir: Path, name: str, model: Any = None) -> list[Any]:
    path = run_dir / f"{name}.jsonl"
    return list(iter_jsonl(path, model)) if path.is_file() else []
