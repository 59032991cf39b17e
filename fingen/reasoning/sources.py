"""QA benchmarks -> ``QAItem``: FinQA, TAT-QA and ConvFinQA in their original json formats.

Each loader checks the path at call time (``InputError``) and returns a lazy iterator of
``QAItem | Failure``: a malformed item becomes ``Failure(stage="sources")`` and never stops the
run. ``qa_id = content_id(source, original id, question)``. Contexts render the table with
:func:`fingen.reasoning.tables.render_table` (FinQA/ConvFinQA: pre_text, table, post_text;
TAT-QA: table, then paragraphs by ``order``). Generic JSONL/CSV/HF loaders are in
:mod:`fingen.reasoning.mapped`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from fingen.errors import InputError
from fingen.reasoning.numbers import format_number
from fingen.reasoning.tables import render_table
from fingen.records import Failure, QAItem, content_id

__all__ = [
    "LOADERS",
    "STAGE",
    "TATQA_TYPES",
    "conversation_question",
    "existing_path",
    "finqa_answer_type",
    "format_gold",
    "iter_json_records",
    "load_convfinqa",
    "load_finqa",
    "load_tatqa",
    "malformed",
]

STAGE = "sources"
TATQA_TYPES = {
    "arithmetic": "number",
    "count": "number",
    "span": "span",
    "multi-span": "multi_span",
}
_PERCENT_Q = re.compile(r"\bpercent(?:age)?\b(?!\s*-?\s*points?)", re.IGNORECASE)
_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def existing_path(path: str | Path) -> Path:
    """The path, or InputError when it does not exist."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or directory", path=str(p))
    return p


def malformed(item_id: object, exc: BaseException | str, raw: object) -> Failure:
    """A ``Failure`` for one unusable source item (raw kept, truncated to 2,000 chars)."""
    try:
        raw_text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        raw_text = repr(raw)
    detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return Failure(
        stage=STAGE,
        item_id=str(item_id),
        reason="malformed_item",
        detail=detail,
        raw=raw_text[:2000],
    )


def iter_json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(index, record) from a json list (or {"data": [...]}) or a JSONL file.

    A JSONL line that does not parse yields ``(index, Failure)``; a json file that does not
    parse as a whole raises InputError.
    """
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if not line.strip():
                    continue
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield i, malformed(f"{path.name}:{i + 1}", exc, line)
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid json ({exc})", path=str(path)) from exc
    if isinstance(data, dict):
        data = data.get("data", [data])
    if not isinstance(data, list):
        raise InputError("expected a json list of items", path=str(path))
    yield from enumerate(data)


def _lines(texts: Iterable[object]) -> list[str]:
    out = [" ".join(str(t).split()) for t in texts or []]
    return [t for t in out if t.strip(" .")]


def format_gold(value: object) -> str:
    """Gold answer text: numbers without exponent/trailing zeros, strings stripped."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_number(float(value))
    return str(value).strip()


def finqa_answer_type(question: str, exe_ans: object, answer: object = "") -> str:
    """yes_no for "yes"/"no" results, percent when the answer or question says so, else number."""
    if isinstance(exe_ans, str) and exe_ans.strip().lower() in ("yes", "no"):
        return "yes_no"
    if "%" in str(answer or "") or _PERCENT_Q.search(question):
        return "percent"
    return "number"


def _check_value(value: object) -> None:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"answer {value!r} is not a number or yes/no")
    if isinstance(value, str) and value.strip().lower() not in ("yes", "no"):
        float(value.replace(",", ""))


def _finqa_context(item: dict[str, Any]) -> str:
    parts = _lines(item.get("pre_text") or [])
    table = render_table(item.get("table") or [])
    parts += [table] if table else []
    parts += _lines(item.get("post_text") or [])
    return "\n".join(parts)


def load_finqa(path: str | Path, *, source: str = "finqa") -> Iterator[QAItem | Failure]:
    """FinQA items (``qa`` or ConvFinQA-style ``qa_0``/``qa_1``) -> one QAItem per question.

    ``gold_answer`` is ``exe_ans`` formatted; meta keeps ``exe_ans``, ``answer``, ``gold_inds``,
    ``filename``. Raises InputError for a missing path.
    """
    return _iter_finqa(existing_path(path), source)


def _iter_finqa(path: Path, source: str) -> Iterator[QAItem | Failure]:
    for idx, item in iter_json_records(path):
        if isinstance(item, Failure):
            yield item
            continue
        item_id = item.get("id", idx) if isinstance(item, dict) else idx
        try:
            keys = [k for k in ("qa", "qa_0", "qa_1") if k in item]
            if not keys:
                raise KeyError("qa")
            context = _finqa_context(item)
            for key in keys:
                qa = item[key]
                question, exe_ans = str(qa["question"]).strip(), qa["exe_ans"]
                _check_value(exe_ans)
                if not question:
                    raise ValueError("empty question")
                orig_id = item_id if key == "qa" else f"{item_id}#{key}"
                yield QAItem(
                    qa_id=content_id(source, orig_id, question),
                    question=question,
                    context=context,
                    gold_answer=format_gold(exe_ans),
                    answer_type=finqa_answer_type(question, exe_ans, qa.get("answer")),
                    source=source,
                    program=qa.get("program") or None,
                    meta={
                        "id": orig_id,
                        "filename": item.get("filename"),
                        "exe_ans": exe_ans,
                        "answer": qa.get("answer"),
                        "gold_inds": qa.get("gold_inds") or {},
                        "table": item.get("table") or [],
                    },
                )
        except _ERRORS as exc:
            yield malformed(item_id, exc, item)


def load_tatqa(path: str | Path, *, source: str = "tatqa") -> Iterator[QAItem | Failure]:
    """TAT-QA documents -> one QAItem per question.

    Spans keep their text (multi-span joined with "; "), arithmetic answers are formatted
    numbers; the unit stays in ``meta["scale"]`` (pass it to ``check_answer(scale=...)``) and
    ``meta["answer_with_scale"]`` reads e.g. "-12.6 million" or "-22.22%". Types: arithmetic ->
    number (percent when scale is percent), count -> number, span, multi-span -> multi_span.
    """
    return _iter_tatqa(existing_path(path), source)


def _with_scale(gold: str, scale: str) -> str:
    if not scale:
        return gold
    return gold if gold.endswith("%") else (f"{gold}%" if scale == "percent" else f"{gold} {scale}")


def _iter_tatqa(path: Path, source: str) -> Iterator[QAItem | Failure]:
    for idx, doc in iter_json_records(path):
        if isinstance(doc, Failure):
            yield doc
            continue
        try:
            table = doc["table"]
            paragraphs = sorted(doc.get("paragraphs") or [], key=lambda p: int(p.get("order", 0)))
            context = "\n".join(
                [render_table(table["table"]), *_lines(p["text"] for p in paragraphs)]
            ).strip()
            questions = doc["questions"]
        except _ERRORS as exc:
            yield malformed(f"{path.name}#{idx}", exc, doc)
            continue
        for q in questions:
            qid = q.get("uid", f"{idx}/{q.get('order')}") if isinstance(q, dict) else idx
            try:
                question, answer, kind = str(q["question"]).strip(), q["answer"], q["answer_type"]
                scale = str(q.get("scale") or "").strip()
                if isinstance(answer, list):
                    if not answer:
                        raise ValueError("empty answer list")
                    gold = "; ".join(format_gold(a) for a in answer)
                else:
                    gold = format_gold(answer)
                if not question or not gold or kind not in TATQA_TYPES:
                    raise ValueError(f"empty question/answer or unknown answer_type {kind!r}")
                answer_type = TATQA_TYPES[kind]
                if kind == "arithmetic" and scale == "percent":
                    answer_type = "percent"
                yield QAItem(
                    qa_id=content_id(source, qid, question),
                    question=question,
                    context=context,
                    gold_answer=gold,
                    answer_type=answer_type,
                    source=source,
                    meta={
                        "id": qid,
                        "scale": scale,
                        "answer": answer,
                        "answer_with_scale": _with_scale(gold, scale),
                        "tatqa_answer_type": kind,
                        "answer_from": q.get("answer_from"),
                        "derivation": q.get("derivation") or "",
                        "rel_paragraphs": q.get("rel_paragraphs") or [],
                        "table_uid": table.get("uid"),
                    },
                )
            except _ERRORS as exc:
                yield malformed(qid, exc, q)


def load_convfinqa(path: str | Path, *, source: str = "convfinqa") -> Iterator[QAItem | Failure]:
    """ConvFinQA -> one QAItem per turn; the question carries the previous turns and answers.

    Reads the conversation files (``annotation.dialogue_break``, ``turn_program``,
    ``exe_ans_list``) and the turn files (``annotation.cur_dial`` + ``turn_ind``); a turn gets
    the same ``qa_id`` from either. ``program`` is the turn's program; meta keeps ``history``.
    """
    return _iter_convfinqa(existing_path(path), source)


def conversation_question(history: list[tuple[str, str]], question: str) -> str:
    """The turn's question with the earlier turns (question, answer) written before it."""
    if not history:
        return question
    lines = ["Conversation so far:"]
    for q, a in history:
        lines += [f"Q: {q}", f"A: {a}"]
    return "\n".join([*lines, f"Current question: {question}"])


def _turns(item: dict[str, Any]) -> tuple[str, list[int]]:
    ann = item["annotation"]
    conv_id = str(item.get("id", ""))
    if "turn_ind" in ann and "cur_dial" in ann:
        turn = int(ann["turn_ind"])
        return re.sub(rf"_{turn}$", "", conv_id), [turn]
    return conv_id, list(range(len(ann["dialogue_break"])))


def _iter_convfinqa(path: Path, source: str) -> Iterator[QAItem | Failure]:
    for idx, item in iter_json_records(path):
        if isinstance(item, Failure):
            yield item
            continue
        try:
            conv_id, turns = _turns(item)
            ann = item["annotation"]
            questions = ann.get("dialogue_break") or ann["cur_dial"]
            answers = ann.get("exe_ans_list") or [None] * turns[-1] + [ann["exe_ans"]]
            programs = ann.get("turn_program") or []
            context = _finqa_context(item)
        except _ERRORS as exc:
            yield malformed(item.get("id", idx) if isinstance(item, dict) else idx, exc, item)
            continue
        for t in turns:
            turn_id = f"{conv_id}#{t}"
            try:
                current, exe_ans = str(questions[t]).strip(), answers[t]
                for value in answers[: t + 1]:  # the history shows the earlier answers
                    _check_value(value)
                history = [(str(questions[i]).strip(), format_gold(answers[i])) for i in range(t)]
                question = conversation_question(history, current)
                program = programs[t] if t < len(programs) else ann.get("cur_program")
                yield QAItem(
                    qa_id=content_id(source, turn_id, question),
                    question=question,
                    context=context,
                    gold_answer=format_gold(exe_ans),
                    answer_type=finqa_answer_type(current, exe_ans),
                    source=source,
                    program=program or None,
                    meta={
                        "id": turn_id,
                        "conversation_id": conv_id,
                        "turn": t,
                        "turn_question": current,
                        "exe_ans": exe_ans,
                        "history": [{"question": q, "answer": a} for q, a in history],
                        "table": item.get("table") or [],
                    },
                )
            except _ERRORS as exc:
                yield malformed(turn_id, exc, {"annotation": ann, "turn": t})


LOADERS: dict[str, Callable[..., Iterator[QAItem | Failure]]] = {
    "finqa": load_finqa,
    "tatqa": load_tatqa,
    "convfinqa": load_convfinqa,
}
