"""Topic words: a tokenizer per language (jieba + Chinese stopwords for zh) and class-based
TF-IDF (BERTopic's formula) over the texts of each topic."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

import numpy as np

from fingen.errors import MissingExtraError

__all__ = ["ZH_STOPWORDS", "ctfidf_words", "tokenizer"]

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
