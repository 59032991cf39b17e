"""Cluster documents by industry x time bucket x topic (FinCPRG top-down; FinBERT2 Fin-TopicModel).

Topics come from BERTopic over title embeddings with Fin-TopicModel's settings (UMAP
n_neighbors=15, n_components=32, min_dist=0.0, cosine, seed 22; HDBSCAN min_cluster_size=2,
min_samples=1; c-TF-IDF over a jieba tokenizer with Chinese stopwords for zh; outliers
reassigned as the Fin-TopicModel notebook does: ``reduce_outliers(..., threshold=0.4)`` with
BERTopic's default strategy). Every setting is a field of ``UmapSettings`` /
``HdbscanSettings`` / ``fit_topics``. UMAP cannot
embed a handful of points in 32 dimensions, so below ``bertopic_min_docs`` titles (or when bertopic is not
installed and ``method="auto"``) the topics come from agglomerative clustering of the
embeddings with a cosine distance threshold, and topic words from the same c-TF-IDF.
Topic ``-1`` marks outliers, as in BERTopic; singletons of the fallback are outliers too.

Example::

    labels, words, method = fit_topics(titles, embedder.encode(titles, kind="query"), "zh")
    clusters = build_clusters(docs, labels, words, industries, periods)
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fingen.errors import MissingExtraError
from fingen.records import Document, TopicCluster, content_id
from fingen.retrieval.topic_words import ctfidf_words, tokenizer

__all__ = [
    "HDBSCAN_SETTINGS",
    "UMAP_SETTINGS",
    "ClusterKey",
    "Granularity",
    "HdbscanSettings",
    "OutlierStrategy",
    "TopicMethod",
    "UmapSettings",
    "build_bertopic",
    "build_clusters",
    "cluster_quality",
    "fit_topics",
    "time_bucket",
]

TopicMethod = Literal["auto", "bertopic", "agglomerative"]
ClusterKey = Literal["industry", "period", "topic"]
Granularity = Literal["quarter", "half", "year"]
OutlierStrategy = Literal["distributions", "c-tf-idf", "embeddings", "probabilities"]
UNKNOWN_PERIOD = "unknown"
_CENTER_MIN_DOCS = 5


class UmapSettings(BaseModel):
    """UMAP of the title embeddings (Fin-TopicModel; neighbours/components are capped for
    tiny sets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_neighbors: int = Field(15, ge=2)
    n_components: int = Field(32, ge=2)
    min_dist: float = Field(0.0, ge=0)
    metric: str = "cosine"


class HdbscanSettings(BaseModel):
    """HDBSCAN over the UMAP space (Fin-TopicModel)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cluster_size: int = Field(2, ge=2)
    min_samples: int = Field(1, ge=1)
    metric: str = "euclidean"


#: Fin-TopicModel's settings, as plain dicts (the BERTopic call adds random_state, capping).
UMAP_SETTINGS = UmapSettings().model_dump()
HDBSCAN_SETTINGS = HdbscanSettings().model_dump()


def time_bucket(date: str | None, granularity: Granularity = "quarter") -> str:
    """``"2018Q3"`` / ``"2018H2"`` / ``"2018"`` from a date string; ``"unknown"`` without one.

    Understands ISO-like dates (2018-09-30, 2018/9/30, 20180930, 2018年9月), quarter and half
    marks (2018Q3, Q3 2018, 2018H1, 2018年三季度, 中报) and bare years. A date only as precise as
    a year (or a half, for quarters) gives the coarser bucket.
    """
    if granularity not in ("quarter", "half", "year"):
        raise ValueError(f"granularity must be one of quarter, half, year; got {granularity!r}")
    s = str(date or "").strip()
    year = re.search(r"(?:19|20)\d{2}", s)
    if not year:
        return UNKNOWN_PERIOD
    y, rest = year.group(0), s[year.end() :]
    month: int | None = None
    if m := re.fullmatch(r"((?:19|20)\d{2})(\d{2})(\d{2})", s):
        month = int(m.group(2))
    elif m := re.match(r"\s*[-/.年]\s*(\d{1,2})(?!\d)", rest):
        month = int(m.group(1))
    quarter = re.search(r"[Qq]([1-4])|([一二三四])季", s)
    half = re.search(r"[Hh]([12])|(中报|半年)", s)
    q: int | None = None
    if month and 1 <= month <= 12:
        q = (month - 1) // 3 + 1
    elif quarter:
        q = int(quarter.group(1)) if quarter.group(1) else "一二三四".index(quarter.group(2)) + 1
    h = (1 if q <= 2 else 2) if q else (int(half.group(1) or 1) if half else None)
    if granularity == "quarter" and q:
        return f"{y}Q{q}"
    if granularity in ("quarter", "half") and h:
        return f"{y}H{h}"
    return y


def _agglomerative(embeddings: np.ndarray, distance_threshold: float) -> list[int]:
    from sklearn.cluster import AgglomerativeClustering

    n = len(embeddings)
    if n < 2:
        return [-1] * n
    x = embeddings
    if n >= _CENTER_MIN_DOCS:  # remove the shared direction: thresholds then mean the same
        x = x - x.mean(axis=0)  # for embedders whose similarities all sit near 0.9 (e5)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    raw = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance_threshold
    ).fit_predict(x)
    sizes = np.bincount(raw)
    relabel: dict[int, int] = {}
    for c in raw:  # number clusters by first appearance; singletons are outliers
        if sizes[c] >= 2 and c not in relabel:
            relabel[int(c)] = len(relabel)
    return [relabel.get(int(c), -1) for c in raw]


def build_bertopic(
    n: int,
    lang: str,
    *,
    n_words: int = 8,
    seed: int = 22,
    umap: UmapSettings | None = None,
    hdbscan: HdbscanSettings | None = None,
) -> Any:
    """The BERTopic model Fin-TopicModel configured (UMAP + HDBSCAN + c-TF-IDF with our
    tokenizer), for ``n`` texts."""
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    u, h = umap or UmapSettings(), hdbscan or HdbscanSettings()
    return BERTopic(
        umap_model=UMAP(n_neighbors=min(u.n_neighbors, n - 1),
                        n_components=min(u.n_components, n - 2), min_dist=u.min_dist,
                        metric=u.metric, random_state=seed),
        hdbscan_model=HDBSCAN(min_cluster_size=h.min_cluster_size, min_samples=h.min_samples,
                              metric=h.metric, prediction_data=True),
        vectorizer_model=CountVectorizer(analyzer=tokenizer(lang)),
        top_n_words=n_words,
        calculate_probabilities=False,
        language="multilingual",  # "english" would strip every non-ASCII character
    )  # fmt: skip


def _bertopic(
    texts: Sequence[str], embeddings: np.ndarray, lang: str, n_words: int, seed: int,
    outlier_threshold: float | None, outlier_strategy: OutlierStrategy | None,
    umap: UmapSettings | None = None, hdbscan: HdbscanSettings | None = None,
) -> tuple[list[int], dict[int, list[str]]]:  # fmt: skip
    model = build_bertopic(len(texts), lang, n_words=n_words, seed=seed, umap=umap, hdbscan=hdbscan)
    docs = list(texts)
    bertopic_log = logging.getLogger("BERTopic")
    level = bertopic_log.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random_state.*", category=UserWarning)
        labels = [int(t) for t in model.fit_transform(docs, embeddings=embeddings)[0]]
    if outlier_threshold is not None and -1 in labels and len(set(labels)) > 1:
        # Fin-TopicModel's call: reduce_outliers(docs, topics, threshold=0.4), the default
        # strategy ("distributions") unless one is set
        strategy: dict[str, Any] = {"strategy": outlier_strategy} if outlier_strategy else {}
        if outlier_strategy == "embeddings":
            strategy["embeddings"] = embeddings
        new = model.reduce_outliers(docs, labels, threshold=outlier_threshold, **strategy)
        labels = [int(t) for t in new]
        bertopic_log.setLevel(logging.ERROR)  # "custom list of topic assignments": intended
        try:
            model.update_topics(
                docs, topics=labels, vectorizer_model=model.vectorizer_model, top_n_words=n_words
            )
        finally:
            bertopic_log.setLevel(level)
    words = {
        t: [w for w, _ in (model.get_topic(t) or []) if w][:n_words]
        for t in sorted(set(labels))
        if t != -1
    }
    return labels, words


def fit_topics(
    texts: Sequence[str],
    embeddings: np.ndarray,
    lang: str,
    *,
    method: TopicMethod = "auto",
    bertopic_min_docs: int = 40,
    distance_threshold: float = 0.7,
    n_words: int = 8,
    seed: int = 22,
    outlier_threshold: float | None = 0.4,
    outlier_strategy: OutlierStrategy | None = None,
    umap: UmapSettings | None = None,
    hdbscan: HdbscanSettings | None = None,
) -> tuple[list[int], dict[int, list[str]], str]:
    """Topic label per text (-1 = outlier), topic words, and the method used.

    Args:
        texts: titles, one per document.
        embeddings: their L2-normalized embeddings, one row per text.
        method: "bertopic", "agglomerative", or "auto" (BERTopic from ``bertopic_min_docs``
            texts on when it is installed, else agglomerative).
        distance_threshold: cosine distance (average linkage) below which the fallback merges
            clusters; from 5 texts on, the embeddings are mean-centred first.
        outlier_threshold: BERTopic ``reduce_outliers`` threshold (None keeps outliers;
            Fin-TopicModel: 0.4).
        outlier_strategy: how outliers are matched to topics; None: BERTopic's default
            ("distributions"), as Fin-TopicModel's notebook calls it.
        umap / hdbscan: the models' settings (default: Fin-TopicModel's).

    Raises:
        MissingExtraError: ``method="bertopic"`` without bertopic installed.
        ValueError: texts and embeddings differ in length.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if len(texts) != len(emb):
        raise ValueError(f"{len(texts)} texts but {len(emb)} embeddings")
    use_bertopic = method == "bertopic" or (method == "auto" and len(texts) >= bertopic_min_docs)
    if use_bertopic:
        try:
            import bertopic  # noqa: F401
        except ImportError as exc:
            if method == "bertopic":
                raise MissingExtraError("bertopic", "topics", "Topic modelling") from exc
            use_bertopic = False
    if use_bertopic and len(texts) >= 4:
        labels, words = _bertopic(
            texts, emb, lang, n_words, seed, outlier_threshold, outlier_strategy, umap, hdbscan
        )
        return labels, words, "bertopic"
    labels = _agglomerative(emb, distance_threshold)
    return labels, ctfidf_words(texts, labels, lang, n_words), "agglomerative"


def cluster_quality(
    embeddings: np.ndarray, labels: Sequence[int], words: dict[int, list[str]]
) -> dict[str, float | int | None]:
    """Silhouette (cosine, outliers left out) and topic diversity (unique words / all words)."""
    from sklearn.metrics import silhouette_score

    lab = np.asarray(labels)
    keep = lab != -1
    n_topics = len(set(lab[keep].tolist()))
    silhouette = None
    if 2 <= n_topics < int(keep.sum()):
        silhouette = round(float(silhouette_score(embeddings[keep], lab[keep], metric="cosine")), 4)
    all_words = [w for ws in words.values() for w in ws]
    diversity = round(len(set(all_words)) / len(all_words), 4) if all_words else None
    return {
        "n_topics": n_topics,
        "outliers": int((~keep).sum()),
        "silhouette": silhouette,
        "topic_diversity": diversity,
    }


def build_clusters(
    docs: Sequence[Document],
    labels: Sequence[int],
    words: dict[int, list[str]],
    industries: Sequence[str],
    periods: Sequence[str],
    *,
    by: Sequence[ClusterKey] = ("industry", "period", "topic"),
) -> list[TopicCluster]:
    """Group documents by the chosen elements; outliers (-1) join no cluster when ``topic``
    is a key. Clusters are ordered by size (largest first), then id."""
    groups: dict[tuple[str, str, int], list[int]] = {}
    for i, topic in enumerate(labels):
        if "topic" in by and topic == -1:
            continue
        key = (
            industries[i] if "industry" in by else "*",
            periods[i] if "period" in by else "*",
            int(topic) if "topic" in by else -1,
        )
        groups.setdefault(key, []).append(i)
    clusters = []
    for (industry, period, topic), members in groups.items():
        doc_ids = [docs[i].doc_id for i in members]
        clusters.append(
            TopicCluster(
                cluster_id=content_id(industry, period, topic, *doc_ids),
                industry=industry,
                period=period,
                topic=topic,
                words=words.get(topic, []),
                doc_ids=doc_ids,
                titles=[docs[i].title for i in members],
            )
        )
    return sorted(clusters, key=lambda c: (-len(c.doc_ids), c.cluster_id))
