"""Labels for unlabeled tasks ("LLMs Meet Finance"): CoT-annotate, extract the label, iterate.

The current model reasons over each text and names one label of a :class:`LabelSet`; the label
is read with :func:`fingen.reasoning.extract.extract_label`. An output naming no label (or
several) is dropped as a ``Failure`` with reason ``unparseable`` (counted, raw kept). Each kept
output becomes an SFT record ``[user: prompt, assistant: "<think>…</think>\\n<answer>label</answer>"]``.

Iterating: round ``r`` annotates every text with ``engines[r]`` (e.g. the model fine-tuned on
round ``r - 1``'s records, served at a new endpoint)::

    for rnd, result in annotate_rounds(texts, SENTIMENT, [engine_v0, engine_v1]): ...
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fingen.errors import RowRejected
from fingen.llm.base import Completion
from fingen.llm.config import LLMConfig
from fingen.llm.engine import LLMEngine
from fingen.llm.tasks import LLMTask, TaskResult, run_task
from fingen.reasoning.extract import (
    CHOICES,
    SENTIMENT,
    YES_NO,
    LabelSet,
    extract_label,
    split_reasoning,
)
from fingen.reasoning.sources import existing_path, iter_json_records
from fingen.records import Failure, SFTRecord, content_id

__all__ = [
    "DEFAULT_TASK",
    "PRESETS",
    "AnnotateTask",
    "TextItem",
    "annotate_rounds",
    "annotate_texts",
    "annotation_text",
    "labelset_for",
    "read_text_rows",
    "record_label",
    "round_config",
    "rows_to_texts",
]

DEFAULT_TASK = {
    "en": "Classify the financial text below.",
    "zh": "请对下面的金融文本进行分类。",
}
_ID_FIELDS = ("id", "text_id", "passage_id", "doc_id", "qa_id")
PRESETS = {"sentiment": SENTIMENT, "yes_no": YES_NO, "choices": CHOICES}


def labelset_for(
    labels: Sequence[str] | None = None,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    preset: str = "sentiment",
) -> LabelSet:
    """``labels`` (with ``synonyms``) when given, else a preset: sentiment, yes_no, choices.

    Raises:
        ValueError: unknown preset, or synonyms for labels not in the set.
    """
    if labels:
        return LabelSet.of(list(labels), synonyms)
    if preset not in PRESETS:
        raise ValueError(f"unknown label preset {preset!r}; allowed: {sorted(PRESETS)}")
    return PRESETS[preset]


def read_text_rows(path: str | Path) -> Iterator[Mapping[str, Any] | Failure]:
    """Rows of a JSONL/json file (a bad line -> Failure) or a CSV file with a header.

    Raises:
        InputError: the path does not exist or the json does not parse.
    """
    p = existing_path(path)
    if p.suffix.lower() == ".csv":
        with p.open(encoding="utf-8-sig", newline="") as fh:
            yield from csv.DictReader(fh)
        return
    for _, row in iter_json_records(p):
        yield row


@dataclass(frozen=True)
class TextItem:
    """One unlabeled text."""

    text_id: str
    text: str
    source: str = ""


def rows_to_texts(
    rows: Iterable[Mapping[str, Any] | Failure],
    *,
    text_field: str = "text",
    id_field: str | None = None,
    source: str = "",
) -> Iterator[TextItem | Failure]:
    """Dict rows -> TextItem; a row without text becomes ``Failure(reason="no_text")``.

    The id is ``id_field`` when given, else the first of id/passage_id/doc_id/qa_id present,
    else a hash of the text.
    """
    for i, row in enumerate(rows):
        if isinstance(row, Failure):
            yield row
            continue
        if not isinstance(row, Mapping):
            yield Failure(stage="annotate", item_id=str(i), reason="no_text",
                          detail=f"row {i} is {type(row).__name__}, not an object")  # fmt: skip
            continue
        text = str(row.get(text_field) or "").strip()
        key = id_field or next((f for f in _ID_FIELDS if row.get(f)), None)
        text_id = str(row[key]) if key and row.get(key) is not None else ""
        text_id = text_id or content_id(source, text, prefix="txt_")
        if not text:
            detail = f"row {i} has no {text_field!r} (fields: {sorted(row)[:20]})"
            yield Failure(stage="annotate", item_id=text_id or str(i), reason="no_text",
                          detail=detail)  # fmt: skip
            continue
        yield TextItem(text_id, text, source)


def annotation_text(reasoning: str, label: str) -> str:
    """The assistant turn of an annotated example."""
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>\n{label}\n</answer>"


def record_label(record: SFTRecord, labelset: LabelSet) -> str | None:
    """The label an annotated record carries (its assistant turn's answer)."""
    return extract_label(record.messages[-1]["content"], labelset)


class AnnotateTask(LLMTask[TextItem, SFTRecord]):
    """LLM task: CoT over one text, then one label; unparseable outputs are rejected.

    Args:
        labelset: the task's labels and their surface forms.
        lang: prompt language.
        task: the instruction (default: "Classify the financial text below.").
        temperature: None keeps the engine's temperature.
    """

    name = "annotate"
    template = "annotate"

    def __init__(
        self,
        labelset: LabelSet,
        lang: str = "en",
        *,
        task: str | None = None,
        temperature: float | None = None,
        template: str | None = None,
    ) -> None:
        super().__init__(lang=lang, template=template)
        self.labelset = labelset
        self.task = task or DEFAULT_TASK.get(lang, DEFAULT_TASK["en"])
        self.temperature = temperature

    def item_id(self, item: TextItem) -> str:
        return item.text_id

    def build(self, item: TextItem) -> list[dict[str, str]]:
        labels = list(self.labelset.labels)
        return self.render(instruction=self.task, text=item.text, labels=labels)

    def request_params(self, item: TextItem) -> dict[str, Any]:
        return {} if self.temperature is None else {"temperature": self.temperature}

    def parse(self, item: TextItem, reply: Any, completion: Completion) -> list[SFTRecord]:
        text = str(reply or "")
        label = extract_label(text, self.labelset)
        if label is None:
            raise RowRejected("unparseable", f"no single label of {list(self.labelset.labels)}")
        reasoning = completion.reasoning or split_reasoning(text).reasoning
        prompt = self.build(item)[-1]["content"]
        return [
            SFTRecord(
                messages=[
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": annotation_text(reasoning, label)},
                ],
                source=item.source,
                qa_id=item.text_id,
            )
        ]


def annotate_texts(
    texts: Iterable[TextItem], labelset: LabelSet, llm: LLMEngine, **task_options: Any
) -> Iterator[TaskResult[TextItem, SFTRecord]]:
    """Annotate every text once; ``task_options`` go to :class:`AnnotateTask`."""
    return run_task(AnnotateTask(labelset, **task_options), texts, llm)


def round_config(
    base: LLMConfig,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
) -> LLMConfig:
    """The LLM config of one round: ``base`` with a new endpoint and/or model.

    A ``base_url`` makes it an OpenAI-compatible backend; a ``model`` without one names the
    embedded model when ``base`` is ``local``. Raises ValueError for an invalid result.
    """
    data = base.model_dump()
    if base_url:
        data.update(backend="openai", base_url=base_url)
    if model and data["backend"] == "local" and not base_url:
        data["local"]["model"] = model
    elif model:
        data["model"] = model
    if api_key_env:
        data["api_key_env"] = api_key_env
    return LLMConfig.model_validate(data)


def annotate_rounds(
    texts: Sequence[TextItem],
    labelset: LabelSet,
    engines: Sequence[LLMEngine],
    **task_options: Any,
) -> Iterator[tuple[int, TaskResult[TextItem, SFTRecord]]]:
    """Annotate all texts once per engine, in order; yields ``(round index, result)``.

    Raises:
        ValueError: no engines.
    """
    if not engines:
        raise ValueError("annotate_rounds needs at least one engine")
    for rnd, engine in enumerate(engines):
        for result in annotate_texts(texts, labelset, engine, **task_options):
            yield rnd, result
