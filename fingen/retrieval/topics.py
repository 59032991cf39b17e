"""Cluster documents by industry x time bucket x topic (FinCPRG top-down; FinBERT2 Fin-TopicModel).

Topics come from BERTopic over title embeddings with Fin-TopicModel's settings (UMAP
n_neighbors=15, n_components=32, min_dist=0.0, cosine, seed 22; HDBSCAN min_cluster_size=2,
min_samples=1; c-TF-IDF over a jieba tokenizer with Chinese stopwords for zh; outliers
reassigned with threshold 0.4, by c-TF-IDF similarity unless told otherwise). UMAP cannot
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
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from fingen.errors import MissingExtraError
from fingen.records import Document, TopicCluster, content_id

__all__ = [
    "HDBSCAN_SETTINGS",
    "UMAP_SETTINGS",
    "ZH_STOPWORDS",
    "ClusterKey",
    "Granularity",
    "OutlierStrategy",
    "TopicMethod",
    "build_clusters",
    "cluster_quality",
    "ctfidf_words",
    "fit_topics",
    "time_bucket",
    "tokenizer",
]

TopicMethod = Literal["auto", "bertopic", "agglomerative"]
ClusterKey = Literal["industry", "period", "topic"]
Granularity = Literal["quarter", "half", "year"]
OutlierStrategy = Literal["c-tf-idf", "embeddings", "distributions"]
UNKNOWN_PERIOD = "unknown"
_CENTER_MIN_DOCS = 5
#: Fin-TopicModel's UMAP settings (n_neighbors=15 and n_components=32 are capped for tiny sets).
UMAP_SETTINGS = {"min_dist": 0.0, "metric": "cosine"}
#: Fin-TopicModel's HDBSCAN settings.
HDBSCAN_SETTINGS = {"min_cluster_size": 2, "min_samples": 1, "metric": "euclidean",
                    "prediction_data": True}  # fmt: skip

_ZH_STOPWORDS_TEXT = """
的 了 和 与 及 或 等 在 是 为 对 将 把 被 从 由 于 以 而 且 并 也
都 就 还 又 更 最 很 其 之 这 那 该 此 各 每 本 我们 我 你 他 她 它
他们 公司 有 无 不 没有 可 可以 能 会 要 应 上 下 中 内 外 后 前 年
月 日 季度 亿元 万元 亿 万 元 同比 环比 约 达 达到 至 到 个 家 项 次
因 因为 所以 但 但是 如果 由于 通过 进行 以及 其中 目前 已 已经 继续 保持
维持 实现 预计 有望 仍 较 相关 主要 同时 带来 受益 持续 进一步 研究 报告
点评 事件 评级 买入 增持 推荐 关注 投资 建议 风险 提示
"""
#: Chinese stopwords for topic words: function words and research-report boilerplate.
ZH_STOPWORDS = frozenset(_ZH_STOPWORDS_TEXT.split())
_EN_STOPWORDS_CACHE: list[frozenset[str]] = []
_EN_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9&'.-]*[a-z0-9]|[a-z]")
_NUMBERISH_RE = re.compile(r"^[\d.,%'-]+$")


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


def tokenizer(lang: str) -> Callable[[str], list[str]]:
    """Topic-word tokenizer: jieba + Chinese stopwords for zh; words minus stopwords for en."""
    if lang.lower().startswith("zh"):
        try:
            import jieba
        except ImportError as exc:  # pragma: no cover - jieba is a core dependency
            raise MissingExtraError("jieba", "topics", "Chinese topic words") from exc
        jieba.setLogLevel(logging.WARNING)

        def zh(text: str) -> list[str]:
            return [
                w
                for w in (t.strip().lower() for t in jieba.lcut(text))
                if len(w) >= 2
                and w not in ZH_STOPWORDS
                and not _NUMBERISH_RE.match(w)
                and any(c.isalnum() for c in w)
            ]

        return zh
    if not _EN_STOPWORDS_CACHE:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        _EN_STOPWORDS_CACHE.append(frozenset(ENGLISH_STOP_WORDS))
    stop = _EN_STOPWORDS_CACHE[0]

    def en(text: str) -> list[str]:
        words = _EN_TOKEN_RE.findall(text.lower().replace("_", " "))
        return [w for w in words if w not in stop and not _NUMBERISH_RE.match(w) and len(w) > 1]

    return en


def ctfidf_words(
    texts: Sequence[str], labels: Sequence[int], lang: str, n_words: int = 8
) -> dict[int, list[str]]:
    """Top ``n_words`` per topic by class-based TF-IDF (BERTopic's formula); -1 is skipped."""
    from sklearn.feature_extraction.text import CountVectorizer

    topics = sorted({t for t in labels if t != -1})
    if not topics:
        return {}
    joined = [" ".join(x for x, t in zip(texts, labels, strict=True) if t == k) for k in topics]
    try:
        counts = CountVectorizer(analyzer=tokenizer(lang)).fit(joined)
    except ValueError:  # nothing but stopwords
        return {k: [] for k in topics}
    x = counts.transform(joined).toarray().astype(float)
    vocab = counts.get_feature_names_out()
    tf = x / np.maximum(x.sum(axis=1, keepdims=True), 1.0)
    idf = np.log(1.0 + (x.sum() / len(topics)) / np.maximum(x.sum(axis=0), 1.0))
    score = tf * idf
    return {
        k: [str(vocab[j]) for j in np.argsort(-score[i])[:n_words] if score[i, j] > 0]
        for i, k in enumerate(topics)
    }


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


def _bertopic(
    texts: Sequence[str], embeddings: np.ndarray, lang: str, n_words: int, seed: int,
    outlier_threshold: float | None, outlier_strategy: OutlierStrategy,
) -> tuple[list[int], dict[int, list[str]]]:  # fmt: skip
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    n = len(texts)
    model = BERTopic(
        umap_model=UMAP(n_neighbors=min(15, n - 1), n_components=min(32, n - 2),
                        random_state=seed, **UMAP_SETTINGS),
        hdbscan_model=HDBSCAN(**HDBSCAN_SETTINGS),
        vectorizer_model=(vectorizer := CountVectorizer(analyzer=tokenizer(lang))),
        top_n_words=n_words,
        calculate_probabilities=False,
        language="multilingual",  # "english" would strip every non-ASCII character
    )  # fmt: skip
    docs = list(texts)
    bertopic_log = logging.getLogger("BERTopic")
    level = bertopic_log.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*random_state.*", category=UserWarning)
        labels = [int(t) for t in model.fit_transform(docs, embeddings=embeddings)[0]]
    if outlier_threshold is not None and -1 in labels and len(set(labels)) > 1:
        new = model.reduce_outliers(
            docs, labels, strategy=outlier_strategy, embeddings=embeddings,
            threshold=outlier_threshold,
        )  # fmt: skip
        labels = [int(t) for t in new]
        bertopic_log.setLevel(logging.ERROR)  # "custom list of topic assignments": intended
        try:
            model.update_topics(
                docs, topics=labels, vectorizer_model=vectorizer, top_n_words=n_words
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
    outlier_strategy: OutlierStrategy = "c-tf-idf",
) -> tuple[list[int], dict[int, list[str]], str]:
    """Topic label per text (-1 = outlier), topic words, and the method used.

    Args:
        texts: titles, one per document.
        embeddings: their L2-normalized embeddings, one row per text.
        method: "bertopic", "agglomerative", or "auto" (BERTopic from ``bertopic_min_docs``
            texts on when it is installed, else agglomerative).
        distance_threshold: cosine distance (average linkage) below which the fallback merges
            clusters; from 5 texts on, the embeddings are mean-centred first.
        outlier_threshold: BERTopic ``reduce_outliers`` threshold (None keeps outliers).
        outlier_strategy: how outliers are matched to topics; "c-tf-idf" (default) compares
            word weights, so the threshold does not depend on the embedder's scale.

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
            texts, emb, lang, n_words, seed, outlier_threshold, outlier_strategy
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
