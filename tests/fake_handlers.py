"""Deterministic ``FakeBackend`` handlers that answer like a competent model would.

``demo`` answers every task of the demo pipeline from the prompt it is given (sentences,
document lists, questions), so every stage produces data without a model. The replies depend
only on the request, so a run's outputs are a function of what fingen sent: the output
digests in ``tests/data/demo_digests.json`` change exactly when what fingen builds changes.
Use it from YAML as ``llm: {backend: fake, fake: {handler: "tests.fake_handlers:demo"}}``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any

from fingen.llm.base import ChatRequest
from fingen.llm.fake import schema_instance

__all__ = ["demo", "last_user", "stable_int"]

_SENTENCE = re.compile(r"^\[(\d+)\] (.+)$", re.MULTILINE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_user(request: ChatRequest) -> str:
    """The text of the request's last user message."""
    return next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")


def stable_int(*parts: object) -> int:
    """A number derived from the parts (the same on every machine and run)."""
    return int(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _count(pattern: str, text: str, default: int = 1) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else default


def _words(text: str, n: int) -> str:
    return " ".join(re.findall(r"[A-Za-z][A-Za-z&'-]+", text)[:n]) or "the results"


def _bottom_up(prompt: str) -> dict[str, Any]:
    sentences = [(int(i), s.strip()) for i, s in _SENTENCE.findall(prompt)]
    n_sent = _count(r"Exactly (\d+) sentence-level", prompt)
    n_pass = _count(r"Exactly (\d+) passage-level", prompt)
    title = re.search(r'from "([^"]+)"', prompt)
    subject = title.group(1) if title else _words(prompt, 4)
    sq = []
    for k, (idx, text) in enumerate(sentences[:n_sent]):
        sq.append(
            {
                "question": f"What does {subject} report about {_words(text, 6).lower()}?",
                "sentence_ids": [idx],
                "evidence": text[: max(25, min(len(text), 80))],
                "answer": _words(text, 3 + k),
            }
        )
    pq = [
        {"question": f"How does {subject} explain {_words(prompt[-400:], 4).lower()} overall?"}
        for _ in range(n_pass)
    ]
    return {"sentence_queries": sq, "passage_queries": pq}


def _top_down(prompt: str) -> dict[str, Any]:
    docs = [(int(i), t.strip()) for i, t in _SENTENCE.findall(prompt)]
    n = _count(r"Write exactly (\d+) topic-level", prompt)
    out = []
    for k in range(n):
        pair = docs[k % max(1, len(docs)) :][:2] or docs[:2]
        names = " and ".join(t for _, t in pair)
        out.append(
            {
                "question": f"How do {names} compare on revenue and margins (view {k + 1})?",
                "documents": [i for i, _ in pair],
                "answer": "",
            }
        )
    return {"queries": out}


@functools.cache
def _golds() -> dict[str, str]:
    """Question -> gold answer of the demo's FinQA items: the fake teacher knows them."""
    from fingen.reasoning.sources import load_finqa

    path = Path(__file__).resolve().parents[1] / "fingen" / "_demo" / "finqa_items.json"
    return {it.question: it.gold_answer for it in load_finqa(str(path)) if hasattr(it, "qa_id")}


def _distill(request: ChatRequest, prompt: str) -> str:
    numbers = _NUMBER.findall(prompt) or ["0"]
    pick = numbers[stable_int(prompt, request.sample_idx) % len(numbers)]
    question = re.search(r"Question: (.+)", prompt)
    gold = _golds().get(question.group(1).strip()) if question else None
    if gold is not None and request.sample_idx % 2 == 0:  # even samples answer correctly
        pick = gold
    steps = "\n".join(f"Step {i + 1}: read the figures for line {i + 1}." for i in range(3))
    if request.sample_idx % 2:  # every other sample is long and repetitive (DPO material)
        steps += "\n" + "The table shows the value again. " * 40
    return f"{steps}\nSo the answer is {pick}.\n\\boxed{{{pick}}}"


def _grade(prompt: str) -> int:
    return stable_int(prompt) % 3


def demo(request: ChatRequest) -> Any:
    """Answer one request of the demo pipeline (structured tasks by schema name)."""
    prompt = last_user(request)
    name = request.schema_name
    if request.json_schema is None:
        return _distill(request, prompt)
    if name == "BottomUpReply":
        return _bottom_up(prompt)
    if name == "TopDownReply":
        return _top_down(prompt)
    if name == "TitleReply":
        return {"title": f"Report on {_words(prompt[-600:], 5)}"}
    if name in ("Judgement", "RelevanceReply"):
        grade = _grade(prompt)
        return {"rationale": f"The passage matches {grade} of the query's terms.", "score": grade}
    if name == "AnswerJudgement":
        return {"reason": "Compared with the gold answer.", "correct": stable_int(prompt) % 2}
    if name == "ReasoningJudgement":
        schema = request.json_schema
        scores = {k: {"reason": "checked", "score": 1} for k in schema.get("properties", {})}
        if prompt.count("again") > 3:  # the long, repetitive samples
            scores["low_repetition"] = {"reason": "repeats itself", "score": 0}
        return scores
    return schema_instance(request.json_schema)
