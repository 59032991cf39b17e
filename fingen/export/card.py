"""The dataset card (README.md) of a hub folder: YAML ``configs`` front matter, counts per level
and label origin, models, prompt hashes, stage pass rates and example rows."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import yaml

from fingen.run import RunData

__all__ = ["render_card"]

_LICENCE_IDS = (
    "apache-2.0 mit cc0-1.0 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-4.0 "
    "cc-by-nc-sa-4.0 cc-by-nc-nd-4.0 cc-by-nd-4.0 odc-by odbl pddl cdla-permissive-2.0 "
    "cdla-sharing-1.0 gpl-3.0 lgpl-3.0 agpl-3.0 bsd-2-clause bsd-3-clause openrail"
)
_HUB_LICENCES = frozenset(_LICENCE_IDS.split())

_ABOUT = {
    "corpus": "passages (BEIR `corpus`: `_id`, `title`, `text`)",
    "queries": "generated queries (BEIR `queries` plus level, origin, answer, split)",
    "negatives": "verified negatives: candidates the judge found irrelevant (score 0)",
    "sft": "verified chain-of-thought as chat `messages`",
    "dpo": "preference pairs `prompt`, `chosen`, `rejected`",
    "rl": "questions with gold answers for RL (`prompt`, `answer`)",
}


def _licence(data: RunData, licences: Counter[str]) -> tuple[str, str]:
    """(hub licence id, sentence for the card)."""
    for key in ("license", "licence"):
        if value := data.manifest.get("config", {}).get(key):
            licences[str(value)] += 1
    if not licences:
        return "other", (
            "The licence of the source documents is not recorded in this run, so the card says "
            '"other". Check the sources\' terms before using or sharing this dataset.'
        )
    names = ", ".join(f"`{k}`" for k in sorted(licences))
    only = next(iter(licences)).lower() if len(licences) == 1 else ""
    if only in _HUB_LICENCES:
        return only, f"Source documents are licensed {names}."
    return "other", f"Source documents carry these licences: {names}. Check them before use."


def _size(n: int) -> str:
    bounds = ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"))
    bounds += ((10**6, "100K<n<1M"), (10**7, "1M<n<10M"))
    return next((label for limit, label in bounds if n < limit), "n>10M")


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def line(cells: list[Any]) -> str:
        return (
            "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in cells) + " |"
        )

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)]) + "\n"


def _fenced(text: str) -> str:
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}json\n{text}\n{fence}\n"


def _listed(counts: Counter[Any]) -> str:
    return ", ".join(f"`{k}` ({v})" for k, v in counts.most_common() if k) or "none"


def _card_meta(name: str, tables: dict[str, list[dict]], langs: set[str], licence: str) -> dict:
    tasks = ["text-retrieval"] if {"corpus", "queries"} & set(tables) else []
    tasks += ["question-answering"] if {"sft", "rl"} & set(tables) else []
    tasks += ["text-generation"] if {"sft", "dpo"} & set(tables) else []
    files = {n: [{"split": "train", "path": f"data/{n}/train-*.parquet"}] for n in tables}
    return {
        "configs": [{"config_name": n, "data_files": f} for n, f in files.items()],
        "language": sorted(langs) or ["en"],
        "license": licence,
        "task_categories": tasks,
        "size_categories": [_size(max((len(t) for t in tables.values()), default=0))],
        "tags": ["finance", "synthetic", "fingen"],
        "pretty_name": name,
    }


def _stage_rows(stages: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for key, e in stages.items():
        n_in, ok = e.get("inputs", 0), e.get("succeeded", 0)
        rate = f"{100 * ok / n_in:.1f}%" if n_in else "–"
        rate = f"**{rate}**" if str(e.get("stage", "")).startswith("filter") else rate
        why = ", ".join(f"{r}: {n}" for r, n in e.get("failures_by_reason", {}).items())
        row = [key, e.get("stage", ""), n_in, ok, e.get("failed", 0), e.get("rejected_rows", 0)]
        rows.append([*row, rate, why or "–"])
    return rows


def _about_qrels(name: str) -> str:
    graded = name.endswith("_graded")
    base = name.removeprefix("qrels_").removesuffix("_graded")
    if base in ("train", "dev", "test"):
        what = f"direct + judged labels of the `{base}` split's queries"
    elif base == "all":
        what = "direct + judged labels of every level (no mined labels, as BEIR `all`)"
    else:
        more = " plus mined labels" if base.endswith("_extended") else ""
        what = f"direct + judged labels of {base.split('_')[0]}-level queries{more}"
    return what + (": every label with its 0-2 grade" if graded else ": positives (score 1)")


def _grades_section(data: RunData) -> str:
    rule, counts = data.rule, Counter((r.kind, r.score) for r in data.qrels)
    rows = [[kind, *(counts[kind, g] for g in (2, 1, 0))] for kind in ("direct", "judged", "mined")]
    return (
        "## Relevance grades\n\nEvery label has a grade: **2** the passage answers the "
        "query, **1** partially relevant (on the subject, answers part of it), **0** not "
        "relevant (a verified negative). Direct labels (the passage a query was written from) "
        "are 2; judged and mined labels carry the judge's grade. In the binary `qrels_*` "
        f"tables a positive is a grade of at least **{rule.min_positive}** "
        "(`relevance.min_positive`), written as score 1; grade-1 labels are never positives "
        "or negatives there at the default. The `qrels_*_graded` tables keep every label with "
        "its grade. The same pair has the same grade in every table.\n\n"
        + _md_table(["origin", "grade 2", "grade 1", "grade 0"], rows)
    )


def render_card(
    data: RunData,
    repo_id: str,
    tables: dict[str, list[dict]],
    langs: set[str],
    licences: Counter[str],
) -> str:
    """README.md: YAML front matter (configs, language, license, tasks, size), then the body."""
    m, name, llm = data.manifest, repo_id.split("/")[1], data.manifest.get("llm", {})
    licence, licence_note = _licence(data, licences)
    front = yaml.safe_dump(_card_meta(name, tables, langs, licence), sort_keys=False)
    level = {q.query_id: q.level for q in data.queries.values()}
    origin = Counter((level.get(r.query_id, "?"), r.kind) for r in data.positives)
    per_level = [
        [lv, n, *(origin[lv, k] for k in ("direct", "judged", "mined"))]
        for lv, n in Counter(level.values()).items()
    ]
    corpus = {r["_id"] for r in tables.get("corpus", [])}
    dangling = sum(r.passage_id not in corpus for r in data.qrels)
    about = [[f"`{n}`", len(t), _ABOUT.get(n) or _about_qrels(n)] for n, t in tables.items()]
    parts = [
        f"---\n{front}---\n\n# {name}\n\nSynthetic financial dataset generated with fingen "
        f"(pipeline `{m.get('pipeline', '?')}`, run status `{m.get('status', 'unknown')}`). "
        "Every config has one `train` split.\n",
        _md_table(["config", "rows", "contents"], about),
        f'```python\nfrom datasets import load_dataset\n\nds = load_dataset("{repo_id}", "corpus", '
        'split="train")\n```\n\n## Queries and labels per level\n',
        _md_table(["level", "queries", "direct", "judged", "mined"], per_level),
        f"{dangling} labels whose passage is not in the corpus were left out.\n" if dangling else "",
        _grades_section(data),
        f"## Models\n\n- generator: `{llm.get('backend', '?')}` / `{llm.get('model', '?')}`\n"
        f"- embedder: `{m.get('embedder', '?')}`\n"
        f"- relevance judges: {_listed(Counter(r.judge for r in data.qrels))}\n"
        f"- query origins (prompt hash @ model): {_listed(Counter(q.origin for q in data.queries.values()))}\n"
        "\n## Prompt templates (sha256)\n",
        _md_table(["template", "sha256"], [[k, f"`{v}`"] for k, v in m.get("prompts", {}).items()]),
        "## Stages and filter pass rates\n\nPass rate = succeeded / inputs; filters in bold.\n",
        _md_table(
            ["stage", "type", "inputs", "succeeded", "failed", "rejected rows", "pass rate", "failures by reason"],
            _stage_rows(m.get("stages", {})),
        ),
        f"## Licence\n\n{licence_note}\n\n## Examples\n",
    ]  # fmt: skip
    for n, rows in tables.items():
        clip = [{k: v[:300] + "…" if isinstance(v, str) and len(v) > 300 else v for k, v in r.items()} for r in rows[:2]]  # fmt: skip
        parts.append(f"### {n}\n\n" + _fenced(json.dumps(clip, ensure_ascii=False, indent=1)))
    return "\n".join(p for p in parts if p)
