"""Titles for documents that have none, written by the LLM from the start of their text.

Topic clustering works on titles (FinCPRG, Fin-TopicModel), so untitled documents (CFBenchmark
excerpts, plain-text files) get a short report-style headline first. The title is recorded
with its origin in ``Document.meta["title_origin"]`` (``"<prompt hash>@<model>"``).

Example::

    task = TitleTask(lang="zh", model=llm.model)
    titled = [r for res in run_task(task, untitled, llm) for r in res.records]
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from fingen.llm.base import Completion
from fingen.llm.tasks import RowRejected
from fingen.prompts import load_prompt
from fingen.records import Document
from fingen.retrieval.checks import language_matches

__all__ = ["TitleReply", "TitleTask", "clean_title", "lead_title"]

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


class TitleTask:
    """LLM task: untitled Document -> the same Document with a generated title.

    Args:
        lang: prompt language; a title in another language is rejected ("wrong_language").
        model: model name recorded in the title's origin.
        max_chars: how much of the document text the prompt shows.
        max_title_chars: longer titles are cut.
    """

    name = "titles"
    response_model = TitleReply

    def __init__(
        self,
        *,
        lang: str = "en",
        model: str = "",
        max_chars: int = 2000,
        max_title_chars: int = 80,
        template: str = "title",
    ) -> None:
        self.lang, self.template = lang, template
        self.max_chars, self.max_title_chars = max_chars, max_title_chars
        self.origin = f"{load_prompt(template, lang).short_hash}@{model}"

    def item_id(self, item: Document) -> str:
        return item.doc_id

    def build(self, item: Document) -> list[dict[str, str]]:
        text = item.text.strip()[: self.max_chars]
        return load_prompt(self.template, self.lang).render(
            text=text, company=item.company or "", date=item.date or ""
        )

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
