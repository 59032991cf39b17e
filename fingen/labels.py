"""One relevance rule for every file and table fingen writes.

Grades: 0 = not relevant, 1 = partially relevant, 2 = answers the query. Direct labels
(bottom-up: the passage a query was written from) are 2; judged (top-down grounding) and
mined labels keep the judge's grade. ``relevance.min_positive`` (default 2) decides what is a
positive in every binary file: BEIR tsv files, sentence-transformers pairs/triplets/n-tuples,
FlagEmbedding ``pos`` and the hub's binary tables. A label below it is never a positive; a
grade-1 label is never a negative either (it is only kept in the graded files). A verified
negative is a judged or mined label of grade 0.

Which labels go in which qrels file (as the FinCPRG release):

=============================  ==============================================================
``<level>_level``              direct + judged labels of queries of that level
``<level>_level_extended``     the same plus mined labels
``all``                        the three levels without mined labels
``train`` / ``dev`` / ``test`` ``all``, for the queries of that split
=============================  ==============================================================

``<name>.tsv`` holds the positives (score 1, BEIR's binary convention) and
``<name>_graded.tsv`` every label of the same set with its 0-2 grade.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fingen.records import Qrel, Query

__all__ = [
    "DIRECT_GRADE",
    "GRADES",
    "LEVEL_FILES",
    "RelevanceRule",
    "label_files",
]

GRADES = {0: "not relevant", 1: "partially relevant", 2: "answers the query"}
DIRECT_GRADE = 2
LEVELS = ("sentence", "passage", "topic")
LEVEL_FILES = (
    "all",
    "sentence_level",
    "passage_level",
    "topic_level",
    "sentence_level_extended",
    "passage_level_extended",
)


@dataclass(frozen=True)
class RelevanceRule:
    """What a grade means in binary files: ``score >= min_positive`` is a positive."""

    min_positive: int = 2

    def __post_init__(self) -> None:
        if self.min_positive not in (1, 2):
            raise ValueError(f"min_positive must be 1 or 2, got {self.min_positive!r}")

    def is_positive(self, label: Qrel) -> bool:
        return label.score >= self.min_positive

    def is_negative(self, label: Qrel) -> bool:
        """A verified negative: a judge graded the pair 0."""
        return label.score <= 0 and label.kind != "direct"

    def never_negative(self, label: Qrel) -> bool:
        """Positives and partial labels: such a passage is never a hard negative."""
        return label.score > 0


def label_files(
    queries: Iterable[Query],
    qrels: Iterable[Qrel],
    *,
    splits: Mapping[str, str] | None = None,
) -> dict[str, list[Qrel]]:
    """Every label (all grades) per qrels file name, one label per (query, passage) pair.

    Labels of unknown queries are left out. ``<level>_level_extended`` files are always
    there; ``topic_level_extended`` only when topic queries have mined labels. With
    ``splits`` (query_id -> split name) the split files are added.
    """
    level = {q.query_id: q.level for q in queries}
    best: dict[tuple[str, str], Qrel] = {}
    for r in qrels:
        if r.query_id not in level:
            continue
        key = (r.query_id, r.passage_id)
        old = best.get(key)
        if old is None or (r.kind != "mined", r.score) > (old.kind != "mined", old.score):
            best[key] = r
    files: dict[str, list[Qrel]] = {name: [] for name in LEVEL_FILES}
    files["topic_level_extended"] = []
    for key in sorted(best):
        r = best[key]
        lvl = level[r.query_id]
        files[f"{lvl}_level_extended"].append(r)
        if r.kind != "mined":
            files[f"{lvl}_level"].append(r)
            files["all"].append(r)
            if splits is not None and r.query_id in splits:
                files.setdefault(splits[r.query_id], []).append(r)
    if not any(r.kind == "mined" for r in files["topic_level_extended"]):
        del files["topic_level_extended"]
    return files
