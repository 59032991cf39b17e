"""Document -> Passage: pack whole sentences up to a character budget.

Each passage is one contiguous slice of the document text, from its first sentence's start to
its last sentence's end; `Sentence` offsets are relative to the passage, so
`passage.text[s.start:s.end]` is the sentence.

Example::

    passages = list(chunk_documents(docs, max_chars=800, overlap_sentences=1))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fingen.ingest.sentences import hard_split, split_sentences
from fingen.records import Document, Failure, Passage, Sentence, content_id

__all__ = ["DEFAULT_MAX_CHARS", "chunk_document", "chunk_documents", "default_max_chars"]

#: Passage budget in characters by language ("zh" for any "zh-*"; everything else "en").
DEFAULT_MAX_CHARS = {"en": 1200, "zh": 600}

Span = tuple[int, int]


def default_max_chars(lang: str) -> int:
    """The default passage budget for `lang`."""
    return DEFAULT_MAX_CHARS["zh" if lang.lower().startswith("zh") else "en"]


def _pack(spans: list[Span], max_chars: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy inclusive sentence-index ranges, each spanning at most `max_chars`."""
    ranges: list[tuple[int, int]] = []
    i, n = 0, len(spans)
    while i < n:
        j = i
        while j + 1 < n and spans[j + 1][1] - spans[i][0] <= max_chars:
            j += 1
        ranges.append((i, j))
        if j == n - 1:
            break
        i = max(i + 1, j + 1 - overlap)
    return ranges


def _merge_short(
    ranges: list[tuple[int, int]], spans: list[Span], min_chars: int
) -> list[tuple[int, int]]:
    """Fold ranges shorter than `min_chars` into the previous one (a short first into the next)."""

    def length(r: tuple[int, int]) -> int:
        return spans[r[1]][1] - spans[r[0]][0]

    merged: list[tuple[int, int]] = []
    for r in ranges:
        if merged and length(r) < min_chars:
            prev = merged[-1]
            merged[-1] = (prev[0], max(prev[1], r[1]))
        else:
            merged.append(r)
    if len(merged) > 1 and length(merged[0]) < min_chars:
        merged[:2] = [(merged[0][0], merged[1][1])]
    return merged


def chunk_document(
    doc: Document,
    *,
    max_chars: int | None = None,
    overlap_sentences: int = 0,
    min_chars: int | None = None,
) -> list[Passage]:
    """Split one document into passages of whole sentences.

    Args:
        doc: the document; `doc.lang` picks the sentence rules and the default budget.
        max_chars: passage budget (default 1200 for English, 600 for Chinese). A sentence
            longer than this is hard-split into pieces that fit.
        overlap_sentences: sentences repeated from the end of one passage at the start of
            the next.
        min_chars: a passage shorter than this merges into the previous one
            (default `max_chars // 10`).

    Returns:
        Passages in order; `passage_id = content_id(doc_id, order, text)`.

    Raises:
        ValueError: a non-positive `max_chars` or a negative `overlap_sentences`/`min_chars`.
    """
    budget = max_chars if max_chars is not None else default_max_chars(doc.lang)
    if budget <= 0:
        raise ValueError(f"max_chars must be > 0, got {budget}")
    if overlap_sentences < 0:
        raise ValueError(f"overlap_sentences must be >= 0, got {overlap_sentences}")
    floor = budget // 10 if min_chars is None else min_chars
    if floor < 0:
        raise ValueError(f"min_chars must be >= 0, got {floor}")
    text = doc.text
    spans = [
        piece
        for span in split_sentences(text, doc.lang)
        for piece in hard_split(text, span, budget)
    ]
    ranges = _merge_short(_pack(spans, budget, overlap_sentences), spans, floor)
    passages: list[Passage] = []
    for first, last in ranges:
        start, end = spans[first][0], spans[last][1]
        body = text[start:end]
        if not body.strip():
            continue
        sentences = [
            Sentence(idx=k, start=a - start, end=b - start)
            for k, (a, b) in enumerate(spans[first : last + 1])
        ]
        order = len(passages)
        passages.append(
            Passage(
                passage_id=content_id(doc.doc_id, order, body),
                doc_id=doc.doc_id,
                text=body,
                sentences=sentences,
                order=order,
                title=doc.title,
                lang=doc.lang,
                company=doc.company,
                date=doc.date,
                doc_type=doc.doc_type,
                industry=doc.industry,
            )
        )
    return passages


def chunk_documents(
    docs: Iterable[Document],
    *,
    max_chars: int | None = None,
    overlap_sentences: int = 0,
    min_chars: int | None = None,
) -> Iterator[Passage]:
    """Lazily chunk many documents (same arguments as `chunk_document`)."""
    for doc in docs:
        yield from chunk_document(
            doc, max_chars=max_chars, overlap_sentences=overlap_sentences, min_chars=min_chars
        )


def chunk_each(
    docs: Iterable[Document],
    *,
    max_chars: int | None = None,
    overlap_sentences: int = 0,
    min_chars: int | None = None,
) -> Iterator[list[Passage] | Failure]:
    """Per document, in order: its passages, or a Failure (``chunk_error``, ``no_passages``)."""
    for doc in docs:
        try:
            passages = chunk_document(
                doc, max_chars=max_chars, overlap_sentences=overlap_sentences, min_chars=min_chars
            )
        except ValueError as exc:
            yield Failure(stage="chunk", item_id=doc.doc_id, reason="chunk_error", detail=str(exc))
            continue
        yield passages or Failure(stage="chunk", item_id=doc.doc_id, reason="no_passages")
