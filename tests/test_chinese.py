"""Chinese end to end (FinCPRG is a Chinese dataset).

With ``lang: zh`` every prompt is wholly Chinese: the templates, the structured-output
instruction and re-ask message, and the field descriptions of the JSON schema the model is
shown (``prompts/schema.zh.json``). The retrieval and CoT pipelines then run on Chinese text
with a fake backend that answers in Chinese (``tests.zh_handlers``), and
``pipelines/fincprg_zh.yaml`` runs on the real CFBenchmark excerpts (when ../shared is there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from fingen.config import load_pipeline
from fingen.errors import ConfigError, ParseFailure
from fingen.ingest.chunking import chunk_document
from fingen.llm.base import ChatRequest
from fingen.llm.fake import schema_instance
from fingen.llm.structured import reask_message, schema_instruction
from fingen.pipeline import run_pipeline
from fingen.prompts import localize_schema, set_prompt_dir, templates_digest
from fingen.reasoning.annotate import AnnotateTask, TextItem
from fingen.reasoning.answer_judge import AnswerJudgement, AnswerJudgeTask, SamplePair
from fingen.reasoning.distill import DistillTask, SampleRequest
from fingen.reasoning.extract import LabelSet
from fingen.reasoning.judge import ReasoningJudgement, ReasoningJudgeTask
from fingen.reasoning.synthesize import SynthesizeTask, SynthReply, SynthSource
from fingen.records import CoTSample, Document, QAItem, Query, TopicCluster
from fingen.retrieval.bottom_up import BottomUpReply, BottomUpTask
from fingen.retrieval.grounding import GroundJudgeTask, GroundPair, Judgement
from fingen.retrieval.judges import Candidate, RelevanceJudgeTask, RelevanceReply
from fingen.retrieval.taxonomies import SHENWAN_L1, IndustryTask
from fingen.retrieval.titles import TitleReply, TitleTask
from fingen.retrieval.top_down import TopDownReply, TopDownTask, TopicItem
from fingen.store import iter_jsonl
from tests import zh_handlers

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "prompts"
FINCPRG = ROOT / "pipelines" / "fincprg_zh.yaml"
HANDLER = "tests.zh_handlers:handler"

# -- what may stay English in a Chinese prompt --------------------------------------------------
# ASCII letter runs of length >= 2; an identifier with underscores is one run (sentence_ids).
WORD = re.compile(r"[A-Za-z][A-Za-z_]*[A-Za-z]")
#: JSON key names of the response schemas (the model must write them as they are).
KEYS = frozenset({
    "sentence_queries", "passage_queries", "sentence_ids", "evidence", "answer", "question",
    "queries", "documents", "rationale", "score", "title", "industry", "reason", "correct",
    "items", "program", "answer_type", "consistent_steps", "shared_terms", "min_steps",
    "no_logic_errors", "low_repetition", "domain_relevant", "follows_instruction",
})  # fmt: skip
#: the format's name, as the structured-output instruction also writes it ("JSON Schema").
FORMAT = frozenset({"JSON", "Schema"})
#: JSON Schema keywords and types in the schema shown after the instruction.
SCHEMA_WORDS = frozenset({
    "type", "object", "properties", "items", "prefixItems", "additionalProperties", "required",
    "description", "default", "enum", "const", "format", "pattern", "array", "string",
    "integer", "number", "boolean", "null", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "minLength",
    "maxLength", "minProperties", "maxProperties", "anyOf", "oneOf", "allOf", "not",
})  # fmt: skip
#: literal output syntax some tasks need: the Fin-R1 answer command, the annotation tags, the
#: FinQA program operations and constants, and the answer-type values the schema admits.
BOXED = frozenset({"boxed"})
TAGS = frozenset({"think", "answer"})
PROGRAM = frozenset({
    "add", "subtract", "multiply", "divide", "exp", "greater", "table_sum", "table_average",
    "table_max", "table_min", "const", "none", "null",
    "number", "percent", "yes_no", "span", "text",
})  # fmt: skip
#: the re-ask message names the parse failure by its code.
FAILURE_CODES = frozenset({"invalid_json", "schema_mismatch"})
BASE = KEYS | FORMAT | SCHEMA_WORDS
#: what each template may show beyond ``BASE``
EXTRA = {"distill": BOXED, "annotate": TAGS, "synthesize": PROGRAM}
ALLOWED = BASE | BOXED | TAGS | PROGRAM | FAILURE_CODES


def english(text: str, allowed: Iterable[str] = ALLOWED) -> list[str]:
    """The English words in ``text`` that are not allowed."""
    ok = set(allowed)
    return [w for w in WORD.findall(text) if w not in ok]


def test_the_word_check_catches_english_fragments() -> None:
    assert english("问题（sentence 级）：净利润是多少？") == ["sentence"]
    assert english('放在 "sentence_queries" 中，写在 \\boxed{} 里，只输出 JSON。') == []
    assert english("第 n 步的结果 #0") == []


# -- every zh template, rendered by its task with Chinese variables ------------------------------
TEXT = (
    "招商银行2018年实现归属于股东的净利润805.6亿元，同比增长14.8%。"
    "全年净息差为2.57%，较上年提升14个基点。零售金融业务贡献了超过一半的营业收入。"
    "不良贷款率降至1.36%，资产质量持续改善。我们维持买入评级，目标价38元。"
)
DOC = Document(
    doc_id="d1", title="招商银行年报点评：零售转型成效显著", text=TEXT, lang="zh",
    company="招商银行", date="2019-03-25",
)  # fmt: skip
PASSAGE = chunk_document(DOC, max_chars=600)[0]
QUERY = Query(query_id="q1", text="招商银行2018年净息差是多少？", level="sentence", lang="zh")
ITEM = QAItem(
    qa_id="qa1", question="招商银行2018年净利润的同比增长率是多少？",
    context="招商银行2017年净利润为100亿元，2018年净利润为120亿元。", gold_answer="20%",
)  # fmt: skip
SAMPLE = CoTSample(
    sample_id="s1", qa_id="qa1", reasoning="第1步：读出数据。\n第2步：相减。\n第3步：相除。",
    answer="20%",
)  # fmt: skip
CLUSTER = TopicCluster(
    cluster_id="c1", industry="银行", period="2018年四季度", topic=0, words=["净息差", "不良率"],
    doc_ids=["d1", "d2"], titles=["招商银行年报点评", "兴业银行季报点评"],
)  # fmt: skip
TABLE = [["项目", "2018年", "2017年"], ["营业收入", "606.2", "530.5"]]


def _renders() -> dict[str, list[tuple[Any, Any]]]:
    """Template name -> (task, item) pairs that render it."""
    taxonomy = {"银行": "银行：存贷款、净息差、不良率", "基础化工": "基础化工：化学原料、聚氨酯"}
    pair = SamplePair(ITEM, SAMPLE)
    return {
        "bottom_up": [(BottomUpTask(lang="zh"), PASSAGE)],
        "top_down": [(TopDownTask(lang="zh", queries=2), TopicItem(CLUSTER, ("零售转型。", "")))],
        "title": [(TitleTask(lang="zh"), DOC)],
        "industry": [(IndustryTask(taxonomy, lang="zh"), DOC)],
        "ground_judge": [(GroundJudgeTask(lang="zh"), GroundPair(QUERY, PASSAGE))],
        "relevance_judge": [
            (RelevanceJudgeTask(lang="zh"), Candidate(QUERY.model_copy(update={"level": lv}), PASSAGE))
            for lv in ("sentence", "passage", "topic")
        ],
        "distill": [(DistillTask("zh"), SampleRequest(ITEM, 0))],
        "answer_judge": [(AnswerJudgeTask("zh"), pair)],
        "reasoning_judge": [(ReasoningJudgeTask("zh"), pair)],
        "synthesize": [
            (SynthesizeTask("zh"), SynthSource.from_passage(PASSAGE)),
            (SynthesizeTask("zh"), SynthSource.from_table(TABLE, title="万华化学年报摘要")),
        ],
        "annotate": [(AnnotateTask(LabelSet.of(["积极", "消极", "中性"]), lang="zh"), TextItem("t1", TEXT))],
    }  # fmt: skip


def _prompt_text(task: Any, item: Any) -> str:
    """All messages of the request as the engine sends it (schema instruction appended)."""
    messages = task.build(item)
    text = "\n".join(m["content"] for m in messages)
    if task.response_model is not None:
        schema = localize_schema(task.response_model.model_json_schema(), "zh")
        text += "\n\n" + schema_instruction(schema, "zh")
    return text


def test_every_zh_template_is_rendered_here() -> None:
    on_disk = {p.name.split(".")[0] for p in PROMPTS.glob("*.zh.jinja")}
    assert on_disk == set(_renders())
    for name, cases in _renders().items():
        for task, _ in cases:
            assert task.prompt.name == f"{name}.zh.jinja"  # not the English fallback
            assert task.prompt.path.resolve().parent == PROMPTS.resolve()


@pytest.mark.parametrize("name", sorted(_renders()))
def test_zh_prompts_have_no_english(name: str) -> None:
    for task, item in _renders()[name]:
        text = _prompt_text(task, item)
        assert english(text, BASE | EXTRA.get(name, frozenset())) == [], text
        cjk = sum(1 for c in text if "\u4e00" <= c <= "\u9fff")
        assert cjk > 20, text


def test_zh_prompts_keep_their_conventions() -> None:
    r = _renders()
    bottom_up = r["bottom_up"][0][0].build(PASSAGE)
    assert [m["role"] for m in bottom_up] == ["system", "user"]
    assert (
        "恰好 2 个句子级问题" in bottom_up[-1]["content"] and "出自《" in bottom_up[-1]["content"]
    )
    distill = r["distill"][0][0].build(SampleRequest(ITEM, 0))
    assert [m["role"] for m in distill] == ["user"]  # Fin-R1: no system prompt
    assert "\\boxed{}" in distill[0]["content"] and ITEM.context in distill[0]["content"]
    levels = [t.build(c)[-1]["content"] for t, c in r["relevance_judge"]]
    assert ["句子级" in levels[0], "段落级" in levels[1], "主题级" in levels[2]] == [True] * 3
    synth = [t.build(s)[-1]["content"] for t, s in r["synthesize"]]
    assert "table_sum" not in synth[0] and "table_sum" in synth[1]
    assert "| 营业收入 | 606.2 | 530.5 |" in synth[1]
    annotate = r["annotate"][0][0].build(TextItem("t1", TEXT))[-1]["content"]
    assert "<answer>积极</answer>" in annotate and "积极、消极、中性" in annotate


def test_reask_message_is_chinese() -> None:
    for code in FAILURE_CODES:
        message = reask_message(ParseFailure(code, "回复中缺少必填字段"), "zh")
        assert message["role"] == "user"
        assert english(message["content"], BASE | FAILURE_CODES) == [], message


# -- schemas: descriptions from prompts/schema.zh.json --------------------------------------------
def _response_models() -> list[type[BaseModel]]:
    industry = IndustryTask(SHENWAN_L1, lang="zh").response_model
    return [
        BottomUpReply, TopDownReply, TitleReply, Judgement, RelevanceReply, AnswerJudgement,
        ReasoningJudgement, SynthReply, industry,
    ]  # fmt: skip


def _descriptions(node: Any) -> list[str]:
    if isinstance(node, list):
        return [d for v in node for d in _descriptions(v)]
    if not isinstance(node, dict):
        return []
    found = [node["description"]] if isinstance(node.get("description"), str) else []
    for key, value in node.items():
        if key in ("properties", "$defs"):
            found += [d for sub in value.values() for d in _descriptions(sub)]
        elif key != "description":
            found += _descriptions(value)
    return found


@pytest.mark.parametrize("model", _response_models(), ids=lambda m: m.__name__)
def test_no_response_model_shows_an_english_description(model: type[BaseModel]) -> None:
    schema = localize_schema(model.model_json_schema(), "zh")
    for text in _descriptions(schema):
        assert english(text, PROGRAM) == [], f"{model.__name__}: {text!r} has no translation"
    shown = json.dumps(schema, ensure_ascii=False)
    assert "$ref" not in shown and "$defs" not in shown  # no English class names
    assert english(schema_instruction(schema, "zh")) == []
    # the same replies validate: inlining the definitions changed nothing the model may write
    model.model_validate(schema_instance(schema))


def test_english_schemas_keep_english_descriptions_and_definitions() -> None:
    original = BottomUpReply.model_json_schema()
    en = localize_schema(original, "en")
    assert "$defs" in en and "title" not in json.dumps(en)
    assert _descriptions(en) == _descriptions(original)
    zh = localize_schema(original, "zh-CN")
    assert "可由所引句子回答的问题" in _descriptions(zh)


class _Note(BaseModel):
    note: str = Field(description="an untranslated description")
    reason: str = Field(description="one sentence")


class _Tree(BaseModel):
    """one sentence"""

    name: str = Field(description="one sentence")
    children: list[_Tree] = []


def test_a_description_without_a_translation_stays_as_is() -> None:
    schema = localize_schema(_Note.model_json_schema(), "zh")
    assert schema["properties"]["note"]["description"] == "an untranslated description"
    assert schema["properties"]["reason"]["description"] == "一句话"


def test_recursive_definitions_keep_their_refs() -> None:
    schema = localize_schema(_Tree.model_json_schema(), "zh")
    assert schema["properties"]["children"]["items"] == {"$ref": "#/$defs/_Tree"}
    assert schema["$defs"]["_Tree"]["properties"]["name"]["description"] == "一句话"
    assert schema["description"] == "一句话"


def test_a_user_prompt_dir_overrides_single_translations(tmp_path: Path) -> None:
    (tmp_path / "schema.zh.json").write_text(
        json.dumps({"one sentence": "只写一句话"}, ensure_ascii=False), encoding="utf-8"
    )
    set_prompt_dir(tmp_path)
    try:
        schema = localize_schema(AnswerJudgement.model_json_schema(), "zh")
        assert schema["properties"]["reason"]["description"] == "只写一句话"
        assert "评判的回复" in schema["description"]  # the packaged table fills the rest
        (tmp_path / "schema.zh.json").write_text("[1, 2]", encoding="utf-8")
        with pytest.raises(ConfigError, match="JSON object of strings"):
            localize_schema(AnswerJudgement.model_json_schema(), "zh")
    finally:
        set_prompt_dir(None)


def test_editing_a_translation_table_changes_the_templates_digest(tmp_path: Path) -> None:
    set_prompt_dir(tmp_path)
    try:
        before = templates_digest()
        (tmp_path / "schema.zh.json").write_text('{"one sentence": "一句"}', encoding="utf-8")
        added = templates_digest()
        (tmp_path / "schema.zh.json").write_text('{"one sentence": "两句"}', encoding="utf-8")
        assert len({before, added, templates_digest()}) == 3  # stages that use it re-run
    finally:
        set_prompt_dir(None)


# -- end to end with the Chinese fake backend ----------------------------------------------------
DOCS = {
    "cmb": "招商银行2018年实现归属于股东的净利润805.6亿元，同比增长14.8%。全年净息差为2.57%，"
    "较上年提升14个基点。零售金融业务贡献了超过一半的营业收入，零售转型成效显著。"
    "不良贷款率降至1.36%，资产质量持续改善。我们维持买入评级，目标价38元。",
    "cib": "兴业银行2018年实现净利润606.2亿元，同比增长5.6%。四季度净息差环比回升，"
    "同业负债占比明显下降。不良贷款率为1.57%，拨备覆盖率提升至207%。"
    "公司加快发展投资银行和财富管理业务，维持增持评级。",
    "wanhua": "万华化学2018年实现营业收入728.1亿元，同比增长14.6%。聚氨酯产品价格在下半年明显下滑，"
    "四季度业绩环比下降。公司百万吨乙烯项目稳步推进，将完善石化产业链。"
    "我们下调盈利预测，维持增持评级。",
    "hualu": "华鲁恒升2018年实现归母净利润30.6亿元，同比增长150%。尿素和醋酸价格处于高位，"
    "煤制乙二醇装置全部打通。煤制乙二醇项目成本优势明显，未来将贡献业绩增量。"
    "维持增持评级，目标价15.28元。",
    "saic": "上汽集团2018年整车销量705万辆，同比增长1.8%。下半年国内乘用车市场需求走弱，"
    "公司销量增速放缓。新能源汽车销量同比增长120%，自主品牌亏损收窄。"
    "公司分红率保持在50%以上，维持买入评级。",
    "gwm": "长城汽车2018年整车销量105万辆，同比下降2%。哈弗品牌面临激烈竞争，单车利润下滑。"
    "公司加快推出新车型，海外市场销量增长明显。我们维持中性评级。",
}
QA = [
    {"id": "q1", "question": "招商银行2018年净利润的同比增长率是多少？",
     "context": "招商银行2017年净利润为100亿元，2018年净利润为120亿元。", "answer": "20%"},
    {"id": "q2", "question": "万华化学本年营业收入比上年增加了多少亿元？",
     "context": "万华化学上年营业收入为500亿元，本年营业收入为606.2亿元。", "answer": "106.2"},
    {"id": "q3", "question": "研报对华鲁恒升给出的投资评级是什么？",
     "context": "华鲁恒升煤制乙二醇项目成本优势明显，我们维持增持评级。", "answer": "维持增持评级"},
    {"id": "q4", "question": "按当前股价计算，该公司的市盈率是多少倍？",
     "context": "公司当前股价为30元，每股收益为1.5元。", "answer": "20"},
]  # fmt: skip


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _run(tmp_path: Path, stages: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    config = {
        "name": "zh_test",
        "lang": "zh",
        "llm": {"backend": "fake", "fake": {"handler": HANDLER}, "concurrency": 2},
        "embedder": {"model": "e5"},  # multilingual
        "stages": stages,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    with zh_handlers.recording() as requests:
        result = run_pipeline(load_pipeline(path), tmp_path / "run")
    _check_requests(requests)
    return result.run_dir, _check_manifest(result.run_dir)


def _check_manifest(run_dir: Path) -> dict[str, Any]:
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "complete"
    for key, entry in manifest["stages"].items():
        assert entry["status"] == "done", key
        assert entry["inputs"] == entry["succeeded"] + entry["failed"], key
        assert sum(entry["failures_by_reason"].values()) == (
            entry["failed"] + entry["rejected_rows"]
        ), key
    assert all(name.endswith(".zh.jinja") for name in manifest["prompts"]), manifest["prompts"]
    return manifest


def _check_requests(requests: list[ChatRequest], data: Iterable[str] = ()) -> None:
    """Every prompt the model saw was Chinese (schema instruction and re-asks included),
    but for English words of the ``data`` it shows (tickers, "EPS" in a report excerpt)."""
    assert requests
    allowed = ALLOWED | {w for text in data for w in WORD.findall(text)}
    for request in requests:
        for message in request.messages:
            if message["role"] != "assistant":  # re-asks quote the model's own reply
                assert english(message["content"], allowed) == [], message["content"]


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _cjk(text: str) -> bool:
    return sum(1 for c in text if "\u4e00" <= c <= "\u9fff") >= len(text) * 0.3


def _outputs(manifest: dict[str, Any], stage: str, output: str = "main") -> int:
    return int(manifest["stages"][stage]["outputs"].get(output, 0))


def test_zh_retrieval_pipeline_mines_negatives_and_exports(tmp_path: Path) -> None:
    docs = _write_jsonl(tmp_path / "docs.jsonl", ({"id": k, "text": v} for k, v in DOCS.items()))
    run_dir, manifest = _run(
        tmp_path,
        [
            {"stage": "ingest", "params": {"paths": [str(docs)], "lang": "zh",
                                           "fields": {"text_field": "text", "id_field": "id"}}},
            {"stage": "titles", "params": {"max_chars": 400}},
            {"stage": "chunk", "params": {"max_chars": 120}},
            {"stage": "bottom_up", "params": {"sentence_queries": 2, "passage_queries": 1}},
            {"stage": "topics", "params": {"by": ["industry"], "industry": "embedding"}},
            {"stage": "top_down", "params": {"queries": 1, "top_k": 2}},
            {"stage": "mine", "params": {"global_top_k": 3, "max_candidates": 3}},
            {"stage": "filter"},
            {"stage": "hard_negatives", "params": {"range_min": 0, "range_max": 20,
                                                   "num_negatives": 3}},
            {"stage": "export_retrieval", "params": {"formats": ["beir", "flag_embedding"]}},
        ],
    )  # fmt: skip
    # titles come first, so every passage (and every bottom-up prompt) carries its title
    titled = {d["doc_id"]: d for d in _rows(run_dir / "titles.jsonl")}
    assert len(titled) == 6 and all(_cjk(d["title"]) for d in titled.values())
    assert all(d["meta"]["title_origin"] != "lead" for d in titled.values())
    passages = _rows(run_dir / "chunk.jsonl")
    assert len(passages) > 6
    assert all(p["title"] == titled[p["doc_id"]]["title"] for p in passages)

    queries = _rows(run_dir / "bottom_up.queries.jsonl")
    levels = {q["level"] for q in queries}
    assert levels == {"sentence", "passage"}
    assert all(q["lang"] == "zh" and q["text"].endswith("？") for q in queries)
    for q in queries:
        if q["level"] == "sentence":
            assert len(q["evidence"]) >= 8 and q["evidence"] in DOCS[q["source_doc_ids"][0]]
    assert _outputs(manifest, "bottom_up", "queries") == len(queries) > 0
    assert _outputs(manifest, "top_down", "queries") > 0
    topic = _rows(run_dir / "top_down.queries.jsonl")
    assert all(len(q["source_doc_ids"]) >= 2 and "《" in q["text"] for q in topic)
    assert _outputs(manifest, "mine", "qrels") + _outputs(manifest, "mine", "negatives") > 0
    assert _outputs(manifest, "hard_negatives") > 0

    beir = run_dir / "exports" / "beir"
    exported = _rows(beir / "queries.jsonl")
    assert exported and all(_cjk(q["text"]) for q in exported)
    assert {q["_id"] for q in exported} >= {q["query_id"] for q in topic}
    corpus = _rows(beir / "corpus.jsonl")
    assert len(corpus) == len(passages) and all(_cjk(c["text"]) for c in corpus)
    assert (beir / "qrels" / "all.tsv").read_text(encoding="utf-8").count("\n") > len(exported)
    flag = _rows(run_dir / "exports" / "flag_embedding" / "train.jsonl")
    assert flag and all(_cjk(r["query"]) and r["pos"] and r["neg"] for r in flag)
    assert all(_cjk(text) for r in flag for text in (*r["pos"], *r["neg"]))


def test_zh_cot_pipeline_distills_verifies_judges_and_exports(tmp_path: Path) -> None:
    qa = _write_jsonl(tmp_path / "qa.jsonl", QA)
    run_dir, manifest = _run(
        tmp_path,
        [
            {"stage": "qa_source", "params": {"source": "jsonl", "path": str(qa),
                                              "fields": {"id_field": "id",
                                                         "context_field": "context"}}},
            {"stage": "distill", "params": {"n": 2}},
            {"stage": "verify"},
            {"stage": "judge_reasoning"},
            {"stage": "route"},
            {"stage": "preference"},
            {"stage": "export_training"},
        ],
    )  # fmt: skip
    ids = {r["qa_id"]: r["meta"]["id"] for r in _rows(run_dir / "qa_source.jsonl")}

    def by_item(stage: str) -> dict[tuple[str, int], CoTSample]:
        rows = iter_jsonl(run_dir / f"{stage}.jsonl", CoTSample)
        return {(ids[s.qa_id], s.sample_idx): s for s in rows}

    samples = by_item("distill")
    assert len(samples) == 8 and all(s.answer for s in samples.values())
    assert samples[("q1", 0)].answer == "20%" and samples[("q2", 0)].answer == "106.2"
    assert "第1步" in samples[("q1", 0)].reasoning
    verified = by_item("verify")
    assert [verified[("q1", i)].correct for i in (0, 1)] == [True, False]
    assert verified[("q3", 0)].reasons[-1].startswith("answer_judge:1")  # text: the LLM judge
    assert verified[("q4", 0)].correct is False  # the teacher cannot solve this one
    judged = by_item("judge_reasoning")
    assert {k for k, s in judged.items() if s.quality} == {("q1", 0), ("q2", 0), ("q3", 0)}
    assert all(s.quality is None for k, s in judged.items() if k[1] == 1)  # wrong: unjudged
    assert "judge:low_repetition:1: 该项标准已满足。" in judged[("q1", 0)].reasons

    out = run_dir / "exports" / "training"
    sft, dpo, rl = ([r for p in sorted((out / k).glob("*.jsonl")) for r in _rows(p)]
                    for k in ("sft", "dpo", "rl"))  # fmt: skip
    assert len(sft) == 3 and len(rl) == 1 and dpo
    for row in sft:
        user = next(m["content"] for m in row["messages"] if m["role"] == "user")
        assert "问题：" in user and english(user) == []
        assert "\\boxed{" in row["messages"][-1]["content"]
    assert len(rl) == 1 and "市盈率" in rl[0]["prompt"][0]["content"] and rl[0]["answer"] == "20"
    assert all("\\boxed{" in r["chosen"][0]["content"] and "问题：" in r["prompt"][0]["content"]
               for r in dpo)  # fmt: skip
    assert _outputs(manifest, "preference") == len(dpo)


def test_the_zh_handler_answers_synthesis_annotation_and_industry(tmp_path: Path) -> None:
    from fingen.llm.config import LLMConfig
    from fingen.llm.engine import build_engine
    from fingen.llm.tasks import run_task
    from fingen.reasoning.annotate import annotate_texts, record_label
    from fingen.reasoning.synthesize import synthesize_items

    engine = build_engine(LLMConfig(backend="fake", fake={"handler": HANDLER}))
    try:
        with zh_handlers.recording() as requests:
            synth = list(synthesize_items([SynthSource.from_passage(PASSAGE)], engine, lang="zh"))
            labels = LabelSet.of(["积极", "消极", "中性"])
            notes = list(annotate_texts([TextItem("t1", TEXT)], labels, engine, lang="zh"))
            task = IndustryTask(SHENWAN_L1, lang="zh")
            industry = list(run_task(task, [DOC], engine))
        _check_requests(requests, SHENWAN_L1.values())  # "IT服务" is the taxonomy's own word
    finally:
        engine.close()
    items = synth[0].records
    assert len(items) == 2 and not synth[0].failures  # the programs executed to the answers
    assert all(it.program and it.question.endswith("？") for it in items)
    assert record_label(notes[0].records[0], labels) == "积极"
    assert industry[0].records[0].industry == "银行"


# -- pipelines/fincprg_zh.yaml on the real excerpts ----------------------------------------------
def test_fincprg_zh_writes_titles_before_bottom_up_queries() -> None:
    stages = [s["stage"] for s in yaml.safe_load(FINCPRG.read_text(encoding="utf-8"))["stages"]]
    assert stages.index("titles") < stages.index("chunk") < stages.index("bottom_up")
    assert load_pipeline(FINCPRG).lang == "zh"


def test_fincprg_zh_end_to_end_on_cfbenchmark(tmp_path: Path, shared_data: Path) -> None:
    summary = shared_data / "cfbenchmark_cn" / "summary.jsonl"
    if not summary.is_file():
        pytest.skip(f"{summary} not found")
    overrides = [
        "llm.backend=fake",
        f"llm.fake.handler={HANDLER}",
        "llm.concurrency=2",
        f"stages.ingest.params.paths=[{json.dumps(str(summary))}]",
        "stages.ingest.params.limit=6",
        "stages.bottom_up.params.limit=6",
        "stages.top_down.params.limit=2",
        "stages.mine.params.limit=6",
    ]
    config = load_pipeline(FINCPRG, overrides)
    assert config.embedder.model == "e5"
    with zh_handlers.recording() as requests:
        result = run_pipeline(config, tmp_path / "run")
    _check_requests(requests, (d["text"] for d in _rows(result.run_dir / "ingest.jsonl")))
    manifest = _check_manifest(result.run_dir)
    stages = manifest["stages"]
    assert stages["ingest"]["succeeded"] == 6
    assert stages["titles"]["extra"]["generated"] == 6  # every excerpt got an LLM title
    bottom_up = [r for r in requests if r.schema_name == "BottomUpReply"]
    assert len(bottom_up) == 6 and all("出自《" in r.messages[-1]["content"] for r in bottom_up)
    for stage, output in [("titles", "main"), ("chunk", "main"), ("bottom_up", "queries"),
                          ("bottom_up", "qrels"), ("hard_negatives", "main")]:  # fmt: skip
        assert _outputs(manifest, stage, output) > 0, (stage, output)
    queries = _rows(result.run_dir / "exports" / "beir" / "queries.jsonl")
    assert queries and all(_cjk(q["text"]) for q in queries)
    assert (result.run_dir / "report.html").is_file()
