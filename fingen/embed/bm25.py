"""Lexical BM25 retrieval with `bm25s`, tokenized per language.

Chinese: jieba words (imported lazily; character bigrams when jieba is absent). English:
lower-case alphanumeric words without stopwords. Search returns `(scores, indices)` like the
dense indexes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

from fingen.embed.index import top_k
from fingen.errors import MissingExtraError

__all__ = ["BM25Index", "tokenize", "tokenize_en", "tokenize_zh"]

_WORD_RE = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_CJK_RUN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+(?:\.[0-9]+)?")
_KEEP_RE = re.compile(r"\w")
_ZH_STOPWORDS = frozenset(
    {
        "的", "了", "是", "在", "和", "与", "及", "等", "也", "都", "而", "对", "为", "以", "于",
        "将", "从", "其", "中", "之", "把", "被", "这", "那", "有", "就", "并", "或", "由", "向",
        "该", "此", "但", "所", "已", "又", "个", "着", "到", "上", "下", "我们", "他们", "一个",
        "以及", "其中", "进行", "通过", "由于", "因此",
    }
)  # fmt: skip


@cache
def _en_stopwords() -> frozenset[str]:
    try:
        from bm25s.stopwords import STOPWORDS_EN
    except ImportError:
        return frozenset({"a", "an", "and", "are", "as", "at", "be", "by", "for", "in", "is"})
    return frozenset(STOPWORDS_EN)


def tokenize_en(text: str) -> list[str]:
    """Lower-case words (keeping "3.5" and "company's" whole), stopwords removed."""
    stop = _en_stopwords()
    return [w for w in _WORD_RE.findall(text.lower()) if w not in stop]


@cache
def _jieba() -> Callable[[str], list[str]] | None:
    try:
        import jieba
    except ImportError:
        return None
    jieba.setLogLevel(logging.WARNING)
    return jieba.lcut_for_search


def _bigrams(text: str) -> list[str]:
    tokens: list[str] = []
    for run in _CJK_RUN_RE.findall(text):
        if run[0].isascii() or len(run) == 1:
            tokens.append(run)
        else:
            tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
    return tokens


def tokenize_zh(text: str) -> list[str]:
    """jieba search-mode words (or CJK character bigrams without jieba), lower-cased,
    punctuation and common function words removed."""
    cut = _jieba()
    lowered = text.lower()
    words = cut(lowered) if cut is not None else _bigrams(lowered)
    return [w for w in (w.strip() for w in words) if _KEEP_RE.search(w) and w not in _ZH_STOPWORDS]


def tokenize(text: str, lang: str = "en") -> list[str]:
    """Tokenize for BM25: Chinese rules for "zh"/"zh-*", English otherwise."""
    return tokenize_zh(text) if lang.lower().startswith("zh") else tokenize_en(text)


class BM25Index:
    """BM25 over a fixed list of texts.

    >>> index = BM25Index(["revenue grew 5%", "the board met"], lang="en")
    >>> index.search(["revenue growth"], k=1)[1].tolist()
    [[0]]
    """

    def __init__(
        self, texts: Sequence[str], lang: str = "en", *, k1: float = 1.5, b: float = 0.75
    ) -> None:
        try:
            import bm25s
        except ImportError as exc:
            raise MissingExtraError("bm25s", "bm25", "BM25 retrieval") from exc
        self.lang = lang
        self._n = len(texts)
        self._model = bm25s.BM25(k1=k1, b=b)
        if self._n:
            self._model.index([tokenize(t, lang) for t in texts], show_progress=False)

    def __len__(self) -> int:
        return self._n

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every text for one query (zeros when no query word is indexed)."""
        vocab = self._model.vocab_dict if self._n else {}
        ids = [vocab[t] for t in tokenize(query, self.lang) if t in vocab]
        if not ids:
            return np.zeros(self._n, dtype=np.float32)
        return np.asarray(self._model.get_scores_from_ids(ids), dtype=np.float32)

    def search(self, queries: Sequence[str], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` texts per query: (scores float32, indices int64), shape (n_queries, k)."""
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings, not a single string")
        k = max(0, min(k, self._n))
        scores = np.zeros((len(queries), k), dtype=np.float32)
        indices = np.zeros((len(queries), k), dtype=np.int64)
        for row, query in enumerate(queries):
            s, i = top_k(self.scores(query)[None, :], k)
            scores[row], indices[row] = s[0], i[0]
        return scores, indices
