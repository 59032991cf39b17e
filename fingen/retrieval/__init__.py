"""Retrieval datasets: bottom-up and top-down query generation, row checks, topic clusters."""

from __future__ import annotations

from fingen.retrieval.bottom_up import (
    BottomUpReply,
    BottomUpTask,
    bottom_up_queries,
    numbered_sentences,
)
from fingen.retrieval.checks import (
    RowChecker,
    cjk_ratio,
    dedup_key,
    find_span,
    is_question,
    language_matches,
    ngram_overlap,
    span_in_text,
)
from fingen.retrieval.clusters import Clustering, TopicOptions, cluster_documents
from fingen.retrieval.grounding import (
    GroundJudgeTask,
    GroundPair,
    attach_grounding,
    rank_candidates,
)
from fingen.retrieval.judges import LLMJudge, judge_relevance
from fingen.retrieval.mining import MineOptions, mine_positives
from fingen.retrieval.taxonomies import (
    GICS_SECTORS,
    SHENWAN_L1,
    IndustryTask,
    classify_by_embedding,
    default_taxonomy,
)
from fingen.retrieval.titles import TitleTask, title_documents
from fingen.retrieval.top_down import TopDownOptions, TopDownTask, TopicItem, top_down_queries
from fingen.retrieval.topics import (
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
    "Clustering",
    "GroundJudgeTask",
    "GroundPair",
    "IndustryTask",
    "LLMJudge",
    "MineOptions",
    "RowChecker",
    "TitleTask",
    "TopDownOptions",
    "TopDownTask",
    "TopicItem",
    "TopicOptions",
    "attach_grounding",
    "bottom_up_queries",
    "build_clusters",
    "cjk_ratio",
    "classify_by_embedding",
    "cluster_documents",
    "cluster_quality",
    "dedup_key",
    "default_taxonomy",
    "find_span",
    "fit_topics",
    "is_question",
    "judge_relevance",
    "language_matches",
    "mine_positives",
    "ngram_overlap",
    "numbered_sentences",
    "rank_candidates",
    "span_in_text",
    "time_bucket",
    "title_documents",
    "top_down_queries",
]
