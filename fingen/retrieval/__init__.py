"""Retrieval datasets: bottom-up and top-down query generation, row checks, topic clusters."""

from __future__ import annotations

from fingen.retrieval.bottom_up import BottomUpReply, BottomUpTask, RowChecker, numbered_sentences
from fingen.retrieval.checks import (
    cjk_ratio,
    dedup_key,
    find_span,
    is_question,
    language_matches,
    ngram_overlap,
    span_in_text,
)
from fingen.retrieval.taxonomies import (
    GICS_SECTORS,
    SHENWAN_L1,
    IndustryTask,
    classify_by_embedding,
    default_taxonomy,
)
from fingen.retrieval.titles import TitleTask
from fingen.retrieval.top_down import (
    GroundJudgeTask,
    GroundPair,
    TopDownTask,
    TopicItem,
    attach_grounding,
    rank_candidates,
)
from fingen.retrieval.topics import (
    TopicCluster,
    build_clusters,
    cluster_quality,
    fit_topics,
    time_bucket,
)

__all__ = [
    "GICS_SECTORS",
    "SHENWAN_L1",
    "BottomUpReply",
    "BottomUpTask",
    "GroundJudgeTask",
    "GroundPair",
    "IndustryTask",
    "RowChecker",
    "TitleTask",
    "TopDownTask",
    "TopicCluster",
    "TopicItem",
    "attach_grounding",
    "build_clusters",
    "cjk_ratio",
    "classify_by_embedding",
    "cluster_quality",
    "dedup_key",
    "default_taxonomy",
    "find_span",
    "fit_topics",
    "is_question",
    "language_matches",
    "ngram_overlap",
    "numbered_sentences",
    "rank_candidates",
    "span_in_text",
    "time_bucket",
]
