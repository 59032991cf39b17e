"""A deterministic ``FakeBackend`` handler that answers every fingen task in Chinese.

``handler`` reads the Chinese prompt it is given (``prompts/*.zh.jinja``) the way a competent
model would: bottom-up questions cite a numbered sentence ``[i] ...`` and copy part of it
verbatim as evidence, topic questions name two of the listed documents, judges grade by the
words a question and a passage share, the teacher works simple arithmetic questions out step
by step and answers in ``\\boxed{}``. Replies depend only on the request, so runs repeat.

Use it from YAML as ``llm: {backend: fake, fake: {handler: "tests.zh_handlers:handler"}}``;
``recording()`` collects the requests answered inside a ``with`` block.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fingen.llm.base import ChatRequest
from fingen.llm.fake import schema_instance
from fingen.reasoning.numbers import format_number
from tests.fake_handlers import last_user, stable_int

__all__ = ["handler", "recording", "solve"]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_LINE = re.compile(r"^\[(\d+)\] (.+)$", re.MULTILINE)
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?(?![\d.])")
_AMOUNT = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?(?![\d.])(?!\s*年)")  # not a year
_SCHEMA_CUT = "只回复一个符合以下"  # where fingen appends the schema instruction

_seen: list[list[ChatRequest]] = []


@contextmanager
def recording() -> Iterator[list[ChatRequest]]:
    """The requests ``handler`` answers inside the block, in order."""
    box: list[ChatRequest] = []
    _seen.append(box)
    try:
        yield box
    finally:
        _seen.remove(box)


def _count(pattern: str, text: str, default: int = 1) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else default


def _phrase(text: str, size: int = 8, skip: int = 0) -> str:
    """A run of Chinese characters from ``text`` (the longest ones first), at most ``size``."""
    runs = sorted(_CJK_RUN.findall(text), key=len, reverse=True)
    if not runs:
        return "经营情况"
    run = runs[min(skip, len(runs) - 1)]
    return run[:size]


def _bigrams(text: str) -> set[str]:
    chars = "".join(_CJK_RUN.findall(text))
    return {chars[i : i + 2] for i in range(len(chars) - 1)}


def _between(text: str, start: str, end: str) -> str:
    m = re.search(re.escape(start) + r"(.*?)" + re.escape(end), text, re.DOTALL)
    return m.group(1).strip() if m else ""


# -- retrieval --------------------------------------------------------------------------------
_COMPANY = re.compile(f"[{_CJK}]{{2,4}}(?:股份|集团|银行|证券|保险|控股|科技|化学|汽车|电器|酒业)")
_LEAD = re.compile(f"^[^{_CJK}]*年?(?:但|同时|因此|因|而|我们|公司|预计|其中|此外|另外|目前|受)*")


def _clauses(text: str) -> list[str]:
    """The Chinese clauses of ``text`` (split at punctuation), leading connectives dropped."""
    parts = re.split(r"[，,。；;：:！？!?（）()“”\s]+", text)
    return [
        c for c in (_LEAD.sub("", p) for p in parts) if len(_CJK_RUN.findall(c)) and len(c) >= 4
    ]


def _subject(title: str, text: str) -> str:
    """Who and when a question is about: the company (and year) of the title or the text."""
    head = re.split(r"研究点评|点评|：", title, maxsplit=1)[0] if title else ""
    company = _COMPANY.match(head) or _COMPANY.match(text.strip())
    name = company.group(0) if company else "公司"
    year = re.search(r"(20\d\d)", head) or re.search(r"(20\d\d)\s*年", text)
    if year and year.group(1) in text:  # a year the passage does not name is unsupported
        return f"{name}{year.group(1)}年"
    return name


def _metric(sentence: str) -> tuple[str, str] | None:
    """(what is measured, its value) of the first figure in a sentence that is not a year."""
    for m in re.finditer(r"(-?\d+(?:\.\d+)?)\s*([%亿万元吨辆倍个基点/股]*)", sentence):
        if sentence[m.end() :].lstrip().startswith("年") and not m.group(2):
            continue
        before = re.search(f"([{_CJK}]+)\\s*$", sentence[: m.start()])
        if not before:
            continue
        name = re.sub(r"(?:为|达到|达|至|约|了|降至|升至|提升至)$", "", before.group(1))
        name = re.sub(r"^(?:年|实现|全年|同比|公司|我们)+", "", _LEAD.sub("", name))
        if len(name) >= 2:
            return name[-10:], (m.group(1) + m.group(2)).strip()
    return None


def _topic(text: str) -> str:
    """A short headline phrase: the first clause without figures (else the first clause)."""
    clauses = _clauses(text) or [_phrase(text, 8)]
    plain = [c for c in clauses if not re.search(r"\d", c) and len(c) >= 6]
    return (plain or clauses)[0][:14]


def _bottom_up(prompt: str) -> dict[str, Any]:
    sentences = [(int(i), s.strip()) for i, s in _LINE.findall(prompt)]
    n_sent = _count(r"恰好 (\d+) 个句子级问题", prompt)
    n_pass = _count(r"恰好 (\d+) 个段落级问题", prompt)
    title = re.search(r"出自《(.+?)》", prompt)
    body = "".join(s for _, s in sentences)
    subject = _subject(title.group(1) if title else "", body)
    usable = [(i, s) for i, s in sentences if len(s) >= 12] or sentences
    sq = []
    for idx, text in usable[:n_sent]:
        metric = _metric(text)
        clause = (_clauses(text) or [_phrase(text, 8)])[0][:12]
        if metric:
            question, answer = f"{subject}的{metric[0]}是多少？", metric[1]
        else:
            question, answer = f"研报如何评价{subject}的“{clause}”？", clause
        sq.append(
            {
                "question": question,
                "sentence_ids": [idx],
                "evidence": text[: max(8, min(len(text), 40))],
                "answer": answer,
            }
        )
    asks = (
        "结合“{t}”，{s}业绩变化的主要驱动因素有哪些？",
        "围绕“{t}”，{s}面临的主要风险与增长机遇分别是什么？",
        "研报基于“{t}”对{s}未来盈利前景作何判断？",
    )
    pq = [
        {
            "question": asks[k % len(asks)].format(s=subject, t=_topic(body)[:10]),
            "answer": "见研报分析",
        }
        for k in range(n_pass)
    ]
    return {"sentence_queries": sq, "passage_queries": pq}


def _top_down(prompt: str) -> dict[str, Any]:
    docs = [(int(i), t.strip()) for i, t in _LINE.findall(prompt)]
    n = _count(r"恰好 (\d+) 个主题级问题", prompt)
    need = max(2, _count(r"至少 (\d+) 篇文档", prompt, 2))
    asks = (
        "《{a}》与《{b}》所述公司在业绩增速和盈利能力上有何异同？",
        "《{a}》和《{b}》反映出哪些共同的行业驱动因素与风险？",
        "对比《{a}》与《{b}》，两家公司的估值与评级变化有何不同？",
    )
    out = []
    for k in range(n):
        pair = [docs[(k + j) % len(docs)] for j in range(min(need, len(docs)))] if docs else []
        names = [_phrase(t, 8) for _, t in pair] + ["相关公司", "同业公司"]
        out.append(
            {
                "question": asks[k % len(asks)].format(a=names[0], b=names[1]),
                "documents": [i for i, _ in pair],
                "answer": "",
            }
        )
    return {"queries": out}


def _grade(question: str, passage: str) -> tuple[int, str]:
    q = _bigrams(question)
    shared = q & _bigrams(passage)
    ratio = len(shared) / max(1, len(q))
    score = 2 if ratio >= 0.3 else 1 if ratio >= 0.12 else 0
    verdict = {2: "包含回答问题所需的信息", 1: "与问题主题相关但信息不完整", 0: "与问题无关"}
    words = "、".join(sorted(shared)[:3]) or "无"
    return score, f"段落与问题共有 {len(shared)} 个词组（如{words}），{verdict[score]}。"


def _judge(prompt: str) -> dict[str, Any]:
    m = re.search(r"问题(?:（[^）]*）)?：(.+)", prompt)
    question = m.group(1).strip() if m else ""
    passage = _between(prompt, '"""', '"""')
    title = re.search(r"出自《(.+?)》", prompt)
    named = re.findall(r"《(.+?)》", question)
    if title and any(n in title.group(1) for n in named):  # the part of a topic
        # question that concerns this passage's document
        return {"rationale": "段落出自问题点名的文档，包含其中与该文档相关的部分。", "score": 2}
    score, rationale = _grade(question, passage)
    return {"rationale": rationale, "score": score}


def _title(prompt: str) -> dict[str, Any]:
    text = _between(prompt, '"""', '"""') or prompt
    given = re.search(r"（公司：(.+?)）", prompt)
    company = given.group(1) if given else None
    found = _COMPANY.match(text.strip())
    year = re.search(r"(20\d\d)", text)
    head = company or (found.group(0) if found else "公司")
    period = f"{year.group(1)}年" if year else ""
    return {"title": f"{head}{period}研究点评：{_topic(text)}"}


def _industry(prompt: str) -> dict[str, Any]:
    options = re.findall(r"^- (.+?)：(.+)$", prompt, re.MULTILINE)
    document = _between(prompt, '"""', '"""')
    best, best_hits = (options[0][0] if options else ""), 0
    for label, description in options:
        words = [w for w in re.split(r"[：、，,\s]+", description) if len(w) >= 2]
        hits = sum(document.count(w) for w in words)
        if hits > best_hits:
            best, best_hits = label, hits
    return {"industry": best}


# -- reasoning --------------------------------------------------------------------------------
def solve(question: str, context: str) -> str | None:
    """The answer to a simple arithmetic or rating question over ``context``, or None."""
    nums = [float(x) for x in _AMOUNT.findall(context)]
    if "评级" in question:
        m = re.search(r"买入|增持|中性|减持|卖出", context)
        return m.group(0) if m else None
    if len(nums) < 2:
        return format_number(nums[0]) if nums else None
    a, b = nums[0], nums[1]
    if re.search(r"增长率|增速|增幅|同比", question) and a:
        return f"{format_number(round((b - a) / a * 100, 2))}%"
    if re.search(r"合计|总和|总计|一共", question):
        return format_number(sum(nums))
    if re.search(r"差|增加了多少|减少了多少|变化", question):
        return format_number(b - a)
    return format_number(b)


def _distill(request: ChatRequest, prompt: str) -> str:
    question = (re.search(r"问题：(.+)", prompt) or re.search(r"(.+)", prompt)).group(1).strip()
    context = prompt.split("问题：", 1)[0]
    answer = solve(question, context) or "0"
    numbers = _AMOUNT.findall(context)
    facts = "、".join(numbers[:3]) or _phrase(context, 12)
    steps = [
        f"第1步：从材料中读出相关信息：{facts}。",
        f"第2步：明确问题所问：{question}",
        f"第3步：按题意计算，得到 {answer}。",
    ]
    if request.sample_idx % 2:  # every other sample is wrong, long and repetitive (DPO material)
        wrong = [n for n in numbers if n != answer.rstrip("%")] or ["0"]
        answer = wrong[stable_int(prompt, request.sample_idx) % len(wrong)]
        steps[2] = f"第3步：直接取材料中的数字 {answer}。"
        steps.append("表格中的数据再次列出如下。" * 30)
    return "\n".join(steps) + f"\n所以答案是 {answer}。\n\\boxed{{{answer}}}"


def _answer_judge(prompt: str) -> dict[str, Any]:
    gold = _between(prompt, "标准答案：", "候选最终答案：")
    candidate = _between(prompt, "候选最终答案：", "候选的最终答案")
    agree = bool(gold) and (gold in candidate or candidate in gold) and bool(candidate)
    reason = "候选答案与标准答案含义一致。" if agree else "候选答案与标准答案不一致。"
    return {"reason": reason, "correct": int(agree)}


def _reasoning_judge(request: ChatRequest, prompt: str) -> dict[str, Any]:
    reasoning = _between(prompt, '"""', '"""')
    keys = list((request.json_schema or {}).get("properties", {}))
    scores = {k: {"reason": "该项标准已满足。", "score": 1} for k in keys}
    lines = [ln for ln in reasoning.splitlines() if ln.strip()]
    if len(re.findall(r"(.{6,}?)\1{2,}", reasoning)) and "low_repetition" in scores:
        scores["low_repetition"] = {"reason": "推理中有大量重复内容。", "score": 0}
    if len(lines) < 3 and "min_steps" in scores:
        scores["min_steps"] = {"reason": "推理步骤少于三步。", "score": 0}
    return scores


def _synthesize(prompt: str) -> dict[str, Any]:
    text = _between(prompt, '"""', '"""')
    n = _count(r"编写 (\d+) 个问题", prompt)
    nums = [x for x in _NUMBER.findall(text) if not x.startswith("-")]
    subject = _phrase(text, 8)
    items = []
    for k in range(n):
        if len(nums) >= 2:
            a, b = nums[k % len(nums)], nums[(k + 1) % len(nums)]
            value = format_number(float(b) - float(a))
            items.append(
                {
                    "question": f"{subject}中，{b} 比 {a} 多出多少？",
                    "answer": value,
                    "answer_type": "number",
                    "program": f"subtract({b}, {a})",
                }
            )
        else:
            items.append(
                {
                    "question": f"{subject}的核心内容是什么？",
                    "answer": subject,
                    "answer_type": "span",
                    "program": None,
                }
            )
    return {"items": items}


def _annotate(prompt: str) -> str:
    labels = [x.strip() for x in _between(prompt, "可选标签：", "。\n").split("、") if x.strip()]
    text = _between(prompt, '"""', '"""')
    up = len(re.findall(r"增长|上升|超预期|利好|提升|改善|增持|买入", text))
    down = len(re.findall(r"下滑|下降|亏损|利空|低于预期|减持|风险", text))
    wanted = ("positive", "积极", "正面") if up > down else ("negative", "消极", "负面")
    if up == down:
        wanted = ("neutral", "中性", "中立")
    label = next((x for x in labels if x in wanted), labels[0] if labels else "中性")
    return f"<think>文本中积极信号 {up} 处，消极信号 {down} 处，据此判断。</think>\n<answer>{label}</answer>"


def handler(request: ChatRequest) -> Any:
    """Answer one request of any fingen task in Chinese (structured tasks by schema name)."""
    for box in _seen:
        box.append(request)
    prompt = last_user(request).split(_SCHEMA_CUT, 1)[0]
    name = request.schema_name
    if request.json_schema is None:
        return _annotate(prompt) if "<think>" in prompt else _distill(request, prompt)
    replies = {
        "BottomUpReply": _bottom_up,
        "TopDownReply": _top_down,
        "TitleReply": _title,
        "Judgement": _judge,
        "RelevanceReply": _judge,
        "IndustryReply": _industry,
        "AnswerJudgement": _answer_judge,
        "SynthReply": _synthesize,
    }
    if name in replies:
        return replies[name](prompt)
    if name == "ReasoningJudgement":
        return _reasoning_judge(request, prompt)
    return schema_instance(request.json_schema)
