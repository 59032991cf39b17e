"""Titles for documents that have none, written by the LLM from the start of their text.

Topic clustering works on titles (FinCPRG, Fin-TopicModel), so untitled documents (CFBenchmark
excerpts, plain-text files) get a short report-style headline first. The title is recorded
with its origin in ``Document.meta["title_origin"]`` (``"<prompt hash>@<model>"``).

Example::

    for result in title_documents(docs, llm, lang="zh"):
        doc = result.records[0]   # titled (or kept, or a fallback title); result.failures
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field

from fingen.errors import RowRejected
from fingen.llm.base import Completion
from fingen.llm.engine import LLMEngine
from fingen.llm.tasks import LLMTask, TaskResult, run_task
from fingen.records import Document
from fingen.retrieval.checks import language_matches

__all__ = ["TitleReply", "TitleTask", "clean_title", "lead_title", "title_documents"]

_QUOTES = "\"'“”‘’《》「」『』*#"


class TitleReply(BaseModel):
    title: str = Field(description="a short, specific headline for the document")


def clean_title(text: str, max_chars: int = 80) -> str:
    """One line, without surrounding quotes, a "Title:" prefix or a trailing full stop."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(?:title|标题)\s*[:：]\s*", "", line, flags=re.IGNORECASE)
    line = " ".join(line.split()).strip(_QUOTES + " ").rstrip("。.").strip(_QUOTES + " ")
    return line[:max_chars].strip()


def lead_title(doc: Document, max_chars: int = 40) -> str:
    """A fallback title: the document's first line or sentence, cut to ``max_chars``."""
    first = re.split(r"(?<=[。！？!?])|(?<=\.)\s|\n", doc.text.strip(), maxsplit=1)[0]
    return clean_title(first, max_chars) or doc.doc_id


class TitleTask(LLMTask[Document, Document]):
    """LLM task: untitled Document -> the same Document with a generated title.

    Args:
        lang: prompt language; a title in another language is rejected ("wrong_language").
        model: model name recorded in the title's origin.
        max_chars: how much of the document text the prompt shows.
        max_title_chars: longer titles are cut.
    """

    name = "titles"
    template = "title"
    response_model = TitleReply

    def __init__(
        self,
        *,
        lang: str = "en",
        model: str = "",
        max_chars: int = 2000,
        max_title_chars: int = 80,
        template: str | None = None,
    ) -> None:
        super().__init__(lang=lang, template=template)
        self.max_chars, self.max_title_chars = max_chars, max_title_chars
        self.origin = f"{self.prompt_hash}@{model}"

    def item_id(self, item: Document) -> str:
        return item.doc_id

    def build(self, item: Document) -> list[dict[str, str]]:
        text = item.text.strip()[: self.max_chars]
        return self.render(text=text, company=item.company or "", date=item.date or "")

    def request_params(self, item: Document) -> dict[str, Any]:
        return {"max_tokens": 128}

    def parse(self, item: Document, reply: TitleReply, completion: Completion) -> list[Document]:
        title = clean_title(reply.title, self.max_title_chars)
        if not title:
            raise RowRejected("empty_title", repr(reply.title))
        if not language_matches(title, self.lang, zh_min=0.2, en_max=0.2):
            raise RowRejected("wrong_language", f"expected {self.lang}: {title}")
        meta = {**item.meta, "title_origin": self.origin}
        return [item.model_copy(update={"title": title, "meta": meta})]


def _with_lead_title(doc: Document) -> Document:
    return doc.model_copy(
        update={"title": lead_title(doc), "meta": {**doc.meta, "title_origin": "lead"}}
    )


def title_documents(
    documents: Iterable[Document],
    llm: LLMEngine,
    *,
    overwrite: bool = False,
    fallback: bool = True,
    **options: Any,
) -> Iterator[TaskResult[Document, Document]]:
    """One result per document, in order: titled documents pass through (no request),
    untitled ones (every one with ``overwrite``) get an LLM-written title. When the model
    fails, ``fallback`` gives the document its first sentence as title (``title_origin:
    lead``) and the result keeps the failure; without it the document is left out.

    ``options`` go to :class:`TitleTask` (lang, max_chars, max_title_chars, template).
    """
    docs = list(documents)
    todo = [d for d in docs if overwrite or not d.title.strip()]
    results = iter(run_task(TitleTask(model=llm.model, **options), todo, llm)) if todo else None
    for doc in docs:
        if not (overwrite or not doc.title.strip()):
            yield TaskResult(doc, doc.doc_id, records=[doc])
            continue
        assert results is not None
        result = next(results)
        if not result.ok and fallback:
            result.records = [_with_lead_title(doc)]
        yield result
