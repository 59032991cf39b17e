"""The dataset card (README.md) of a hub folder: YAML front matter (``configs`` with their
splits, language, licence with ``license_name``/``license_link`` when it is "other"), the
configs with what their labels mean, splits, MTEB/BEIR usage, counts per level and label
origin, models, prompt hashes, stage pass rates, sources' licences and example rows."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from fingen.labels import GRADES
from fingen.run import RunData
from fingen.splits import SPLITS, SplitConfig

__all__ = ["MTEB_LANGS", "Licences", "render_card"]

#: card language (ISO 639-1) -> MTEB language-script code
MTEB_LANGS = {"en": "eng-Latn", "zh": "cmn-Hans", "de": "deu-Latn", "fr": "fra-Latn",
              "es": "spa-Latn", "ja": "jpn-Jpan", "ko": "kor-Hang"}  # fmt: skip

_LICENCE_IDS = (
    "apache-2.0 mit cc0-1.0 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-4.0 "
    "cc-by-nc-sa-4.0 cc-by-nc-nd-4.0 cc-by-nd-4.0 odc-by odbl pddl cdla-permissive-2.0 "
    "cdla-sharing-1.0 gpl-3.0 lgpl-3.0 agpl-3.0 bsd-2-clause bsd-3-clause openrail"
)
_HUB_LICENCES = frozenset(_LICENCE_IDS.split())

_ABOUT = {
    "corpus": "passages (BEIR/MTEB `corpus`: `_id`, `title`, `text`, plus `doc_id`, `order`)",
    "queries": "generated queries (BEIR/MTEB `queries`: `_id`, `text`, plus level, lang, "
    "origin and the query's split; no nulls)",
    "queries_meta": "the queries with `answer`, `evidence` (null when none) and their source "
    "passage and document ids",
    "negatives": "verified negatives: candidates the judge found irrelevant",
    "sft": "verified chain-of-thought as chat `messages`",
    "dpo": "preference pairs `prompt`, `chosen`, `rejected`",
    "rl": "questions with gold answers for RL (`prompt`, `answer`)",
}


@dataclass
class Licences:
    """The sources' licences: documents per licence (meta ``license``/``licence``), the links
    given for each (meta ``license_link``/``licence_link``, else ``source_url``; http(s) only)
    and the documents that record none."""

    documents: Counter[str] = field(default_factory=Counter)
    links: dict[str, Counter[str]] = field(default_factory=dict)
    unrecorded: int = 0

    def add(self, meta: Mapping[str, Any]) -> None:
        """Count one document by its ``meta``."""
        lic = str(meta.get("license") or meta.get("licence") or "").strip()
        if not lic:
            self.unrecorded += 1
            return
        self.documents[lic] += 1
        for key in ("license_link", "licence_link", "source_url"):
            link = str(meta.get(key) or "").strip()
            if link.startswith(("https://", "http://")):
                self.links.setdefault(lic, Counter())[link] += 1
                break


def _licence_id(name: str) -> str:
    """A hub ``license_name``: lowercase letters, digits, ``-`` and ``.``."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "custom"


def _licence(data: RunData, repo_id: str, lic: Licences) -> tuple[dict[str, str], str]:
    """(licence fields of the front matter, the card's Licence section)."""
    counts = Counter(lic.documents)
    for key in ("license", "licence"):
        if value := data.manifest.get("config", {}).get(key):
            counts[str(value)] += 1
    section = f"https://huggingface.co/datasets/{repo_id}#licence"
    rows = [
        [f"`{name}`", lic.documents[name], ", ".join(sorted(lic.links.get(name, {}))) or "–"]
        for name in sorted(counts)
    ]
    if lic.unrecorded:
        rows.append(["(not recorded)", lic.unrecorded, "–"])
    table = "\n" + _md_table(["licence", "documents", "link"], rows) if rows else ""
    if not counts:
        fields = {"license": "other", "license_name": "unrecorded-sources", "license_link": section}
        return fields, (
            "The licence of the source documents is not recorded in this run, so the card says "
            '"other". Check the sources\' terms before using or sharing this dataset.\n' + table
        )
    names = ", ".join(f"`{k}`" for k in sorted(counts))
    unrecorded = (
        f" {lic.unrecorded} document{'s record' if lic.unrecorded > 1 else ' records'} no "
        "licence: check their sources' terms."
        if lic.unrecorded
        else ""
    )
    if len(counts) == 1:
        only = next(iter(counts))
        note = f"Source documents are licensed {names}.{unrecorded}\n{table}"
        if _licence_id(only) in _HUB_LICENCES:  # "CC BY 4.0" is the hub's cc-by-4.0
            return {"license": _licence_id(only)}, note
        links = lic.links.get(only, Counter())
        link = next(iter(links)) if len(links) == 1 else section
        return {"license": "other", "license_name": _licence_id(only), "license_link": link}, note
    fields = {"license": "other", "license_name": "mixed-sources", "license_link": section}
    note = f"Source documents carry these licences: {names}. Check them before use.{unrecorded}"
    return fields, f"{note}\n{table}"


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


def _card_meta(
    name: str, tables: Mapping[str, Mapping[str, list]], langs: set[str], licence: dict[str, str]
) -> dict:
    tasks = ["text-retrieval"] if {"corpus", "queries"} & set(tables) else []
    tasks += ["question-answering"] if {"sft", "rl"} & set(tables) else []
    tasks += ["text-generation"] if {"sft", "dpo"} & set(tables) else []
    configs = [
        {
            "config_name": n,
            "data_files": [{"split": s, "path": f"data/{n}/{s}-*.parquet"} for s in splits],
        }
        for n, splits in tables.items()
    ]
    rows = max((sum(map(len, t.values())) for t in tables.values()), default=0)
    return {
        "configs": configs,
        "language": sorted(langs) or ["en"],
        **licence,
        "task_categories": tasks,
        "size_categories": [_size(rows)],
        "tags": ["finance", "synthetic", "fingen", "mteb", "beir"],
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


def _positive(min_positive: int) -> str:
    return f"grade ≥ {min_positive} ({'answers the query' if min_positive >= 2 else 'at least partially relevant'})"


def _labels(name: str, min_positive: int) -> str:
    """What the scores of a config mean: binary (what a positive is) or graded."""
    if name == "default" or (name.startswith("qrels_") and not name.endswith("_graded")):
        return f"binary: score 1 = positive = {_positive(min_positive)}"
    if name.endswith("_graded"):
        return "graded 0-2: " + ", ".join(f"{g} {GRADES[g]}" for g in (2, 1, 0))
    return "grade 0 (not relevant)" if name == "negatives" else "–"


def _about_qrels(name: str) -> str:
    if name == "default":
        return (
            "BEIR/MTEB qrels (`query-id`, `corpus-id`, `score`) per split: the `train`/`dev`/"
            "`test` queries' positives (same rows as `qrels_<split>`)"
        )
    base = name.removeprefix("qrels_").removesuffix("_graded")
    if base in SPLITS:
        what = f"direct + judged labels of the `{base}` split's queries"
    elif base == "all":
        what = "direct + judged labels of every level (no mined labels, as BEIR `all`)"
    else:
        more = " plus mined labels" if base.endswith("_extended") else ""
        what = f"direct + judged labels of {base.split('_')[0]}-level queries{more}"
    return what + ("; every label" if name.endswith("_graded") else "; positives only")


_NEVER = "grade-1 labels are never positives or negatives there. "


def _grades_section(data: RunData) -> str:
    rule, counts = data.rule, Counter((r.kind, r.score) for r in data.qrels)
    rows = [[kind, *(counts[kind, g] for g in (2, 1, 0))] for kind in ("direct", "judged", "mined")]
    return (
        "## Relevance grades\n\nEvery label has a grade: **2** the passage answers the "
        "query, **1** partially relevant (on the subject, answers part of it), **0** not "
        "relevant (a verified negative). Direct labels (the passage a query was written from) "
        "are 2; judged and mined labels carry the judge's grade. In the binary tables "
        "(`default` and `qrels_*`) a positive is a grade of at least "
        f"**{rule.min_positive}** (`relevance.min_positive`), written as score 1; "
        + (_NEVER if rule.min_positive == 2 else "")
        + "The `qrels_*_graded` tables keep every label with its grade (0-2). The same pair "
        "has the same grade in every table.\n\n"
        + _md_table(["origin", "grade 2", "grade 1", "grade 0"], rows)
    )


_SPLIT_HEADER = ["split", "documents", "queries", "with a positive", "positives", "graded labels"]


def _splits_section(
    data: RunData, tables: Mapping[str, Mapping[str, list]], doc_split: Mapping[str, str]
) -> str:
    config = SplitConfig.model_validate(data.manifest.get("config", {}).get("split", {}))
    queries = tables.get("queries", {}).get("queries", [])
    q_split = Counter(r["split"] for r in queries)
    d_split = Counter(doc_split.values())
    graded = {s: len(tables.get(f"qrels_{s}_graded", {}).get("train", [])) for s in SPLITS}
    binary = {s: tables.get("default", {}).get(s, []) for s in SPLITS}
    rows = [
        [f"`{s}`", d_split[s], q_split[s], len({r["query-id"] for r in binary[s]}),
         len(binary[s]), graded[s]]
        for s in SPLITS
        if d_split[s] or q_split[s] or s in config.names
    ]  # fmt: skip
    return (
        "## Splits\n\nQueries are split **by source document** (`fingen.splits`): a query "
        "belongs to the split of its documents, and documents linked by a query (a topic query "
        "spans several) always share a split, so no document is the source of queries in two "
        f"splits. Shares of documents: dev {config.dev:g}, test {config.test:g} (seed "
        f"{config.seed}); the rest is train. The `queries` table says each query's split and "
        "the `default` config has one qrels split per non-empty split (MTEB drops queries "
        "without a positive). The corpus is shared: every split retrieves from the whole "
        "corpus, as in BEIR and MTEB.\n\n" + _md_table(_SPLIT_HEADER, rows)
    )


def _usage_section(repo_id: str, tables: Mapping[str, Mapping[str, list]], langs: set[str]) -> str:
    splits = list(tables.get("default", {}))
    split = "dev" if "dev" in splits else "test" if "test" in splits else splits[0]
    name = re.sub(r"\W", "", repo_id.split("/")[1].title()) or "Fingen"
    eval_langs = [MTEB_LANGS.get(c, c) for c in sorted(langs) or ["en"]]
    return (
        "## Use with MTEB\n\nThe `default` (qrels), `corpus` and `queries` configs are an "
        "MTEB retrieval task as they are (`corpus` and `queries` have no nulls; MTEB drops "
        "queries without a positive):\n\n"
        "```python\nimport mteb\nfrom mteb.abstasks.retrieval import AbsTaskRetrieval\n"
        "from mteb.abstasks.task_metadata import TaskMetadata\n"
        "from sentence_transformers import SentenceTransformer\n\n\n"
        f"class {name}Retrieval(AbsTaskRetrieval):\n    metadata = TaskMetadata(\n"
        f'        name="{name}Retrieval", description="fingen financial retrieval",\n'
        f'        dataset={{"path": "{repo_id}", "revision": "main"}},\n'
        '        type="Retrieval", category="t2t", main_score="ndcg_at_10",\n'
        f'        eval_splits=["{split}"], eval_langs={json.dumps(eval_langs)},\n    )\n\n\n'
        'model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")\n'
        f"result = mteb.evaluate(model, [{name}Retrieval()], cache=None)  # cache=None: fresh scores\n"
        "print(result.task_results[0].get_score())\n```\n\n"
        "With fingen installed, `fingen.export.hub.mteb_task(folder, split=...)` builds the same "
        "task for a local copy (`huggingface_hub.snapshot_download(repo_id, "
        'repo_type="dataset")` or a run\'s `hub/` folder).\n'
    )


def render_card(
    data: RunData,
    repo_id: str,
    tables: Mapping[str, Mapping[str, list[dict]]],
    langs: set[str],
    licences: Licences,
    *,
    doc_split: Mapping[str, str] | None = None,
) -> str:
    """README.md: YAML front matter (configs and splits, language, license, tasks, size),
    then the body. ``tables`` is config -> split -> rows, ``doc_split`` document -> split."""
    m, name, llm = data.manifest, repo_id.split("/")[1], data.manifest.get("llm", {})
    licence, licence_note = _licence(data, repo_id, licences)
    front = yaml.safe_dump(
        _card_meta(name, tables, langs, licence), sort_keys=False, allow_unicode=True
    )
    level = {q.query_id: q.level for q in data.queries.values()}
    origin = Counter((level.get(r.query_id, "?"), r.kind) for r in data.positives)
    per_level = [
        [lv, n, *(origin[lv, k] for k in ("direct", "judged", "mined"))]
        for lv, n in Counter(level.values()).items()
    ]
    corpus = {r["_id"] for r in tables.get("corpus", {}).get("corpus", [])}
    dangling = sum(r.passage_id not in corpus for r in data.qrels)
    about = [
        [f"`{n}`", ", ".join(f"`{s}` ({len(r)})" for s, r in t.items()),
         _labels(n, data.rule.min_positive), _ABOUT.get(n) or _about_qrels(n)]
        for n, t in tables.items()
    ]  # fmt: skip
    parts = [
        f"---\n{front}---\n\n# {name}\n\nSynthetic financial dataset generated with fingen "
        f"(pipeline `{m.get('pipeline', '?')}`, run status `{m.get('status', 'unknown')}`). "
        "`default` (qrels per split), `corpus` and `queries` are a BEIR/MTEB retrieval dataset; "
        "every other config has one `train` split.\n",
        _md_table(["config", "split (rows)", "labels", "contents"], about),
        f'```python\nfrom datasets import load_dataset\n\ncorpus = load_dataset("{repo_id}", '
        f'"corpus", split="corpus")\nqrels = load_dataset("{repo_id}", split="{next(iter(tables.get("default", {})), "train")}")'
        "  # default config\n```\n",
        _grades_section(data),
        _splits_section(data, tables, doc_split or {}),
        _usage_section(repo_id, tables, langs) if "default" in tables else "",
        "## Queries and labels per level\n",
        _md_table(["level", "queries", "direct", "judged", "mined"], per_level),
        f"{dangling} labels whose passage is not in the corpus were left out.\n" if dangling else "",
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
        f"## Licence\n\n{licence_note}\n## Examples\n",
    ]  # fmt: skip
    for n, splits in tables.items():
        rows = next(iter(splits.values()), [])
        clip = [{k: v[:300] + "…" if isinstance(v, str) and len(v) > 300 else v for k, v in r.items()} for r in rows[:2]]  # fmt: skip
        parts.append(f"### {n}\n\n" + _fenced(json.dumps(clip, ensure_ascii=False, indent=1)))
    return "\n".join(p for p in parts if p)
