"""Industry taxonomies (data) and zero-shot classification of documents into one.

A taxonomy maps a label to a short description; the description is what the embedder (or the
LLM) sees, the label is what lands in ``Document.industry``. Defaults: GICS's 11 sectors for
English, Shenwan (申万, 2021) level-1's 31 industries for Chinese. A pipeline replaces them with
``taxonomy: {label: description, ...}`` in the ``topics`` stage params.

Two zero-shot classifiers:

- ``classify_by_embedding`` (the default): cosine similarity between each document's
  title + lead text and every label description; no LLM call, deterministic, cheap.
- ``IndustryTask``: an LLM task whose response model only admits the taxonomy's labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import create_model

from fingen.errors import RowRejected
from fingen.llm.base import Completion
from fingen.llm.tasks import LLMTask
from fingen.records import Document

__all__ = [
    "GICS_SECTORS",
    "SHENWAN_L1",
    "UNKNOWN_INDUSTRY",
    "IndustryTask",
    "classify_by_embedding",
    "default_taxonomy",
    "document_lead",
]

UNKNOWN_INDUSTRY = "unknown"

#: GICS level-1 sectors (2023 structure).
GICS_SECTORS: dict[str, str] = {
    "Energy": "Energy: oil, gas, coal, drilling, exploration, refining, pipelines",
    "Materials": "Materials: chemicals, construction materials, containers, metals, mining, paper",
    "Industrials": "Industrials: aerospace, defense, machinery, construction, airlines, "
    "transportation, logistics, professional services",
    "Consumer Discretionary": "Consumer discretionary: automobiles, retail, apparel, hotels, "
    "restaurants, leisure, household durables, e-commerce",
    "Consumer Staples": "Consumer staples: food, beverages, tobacco, household and personal "
    "products, grocery and drug retail",
    "Health Care": "Health care: pharmaceuticals, biotechnology, medical devices, hospitals, "
    "health insurance and services",
    "Financials": "Financials: banks, insurance, asset management, brokerage, consumer "
    "finance, payments, exchanges",
    "Information Technology": "Information technology: software, IT services, semiconductors, "
    "computers, hardware, electronic equipment",
    "Communication Services": "Communication services: telecom, media, entertainment, "
    "advertising, interactive media, social networks",
    "Utilities": "Utilities: electric, gas and water utilities, independent power, renewables",
    "Real Estate": "Real estate: REITs, property development, management and services",
}

#: Shenwan (申万) 2021 level-1 industries.
SHENWAN_L1: dict[str, str] = {
    "农林牧渔": "农林牧渔：种植业、养殖业、饲料、农产品加工、渔业、林业、动物保健",
    "基础化工": "基础化工：化学原料、化学制品、化学纤维、塑料、橡胶、农化制品",
    "钢铁": "钢铁：普钢、特钢、冶钢原料、钢材",
    "有色金属": "有色金属：工业金属、贵金属、黄金、铜、铝、锂、稀土、小金属",
    "电子": "电子：半导体、芯片、元件、光学光电子、消费电子、面板",
    "汽车": "汽车：乘用车、商用车、汽车零部件、汽车服务、摩托车",
    "家用电器": "家用电器：白色家电、空调、冰箱、黑色家电、小家电、厨卫电器",
    "食品饮料": "食品饮料：白酒、啤酒、饮料、乳品、调味品、食品加工、休闲食品",
    "纺织服饰": "纺织服饰：纺织制造、服装家纺、饰品、鞋帽",
    "轻工制造": "轻工制造：造纸、包装印刷、家居用品、文娱用品",
    "医药生物": "医药生物：化学制药、中药、生物制品、医疗器械、医药商业、医疗服务、疫苗",
    "公用事业": "公用事业：电力、火电、水电、核电、燃气、供热",
    "交通运输": "交通运输：物流、快递、航空机场、航运港口、铁路公路、高速公路",
    "房地产": "房地产：房地产开发、物业管理、房地产服务",
    "商贸零售": "商贸零售：一般零售、百货、超市、专业连锁、贸易、互联网电商",
    "社会服务": "社会服务：酒店餐饮、旅游景区、教育、体育、专业服务",
    "银行": "银行：国有大型银行、股份制银行、城商行、农商行、存贷款、净息差、不良率",
    "非银金融": "非银金融：证券、券商、保险、多元金融、信托、期货",
    "综合": "综合：综合类企业、多元化经营",
    "建筑材料": "建筑材料：水泥、玻璃、玻纤、装修建材、防水材料",
    "建筑装饰": "建筑装饰：房屋建设、基础建设、专业工程、工程咨询、装修装饰",
    "电力设备": "电力设备：光伏、风电、储能、锂电池、电网设备、电机、新能源",
    "机械设备": "机械设备：通用设备、专用设备、工程机械、自动化设备、轨交设备",
    "国防军工": "国防军工：航天、航空装备、地面兵装、航海装备、军工电子",
    "计算机": "计算机：计算机设备、软件开发、IT服务、云计算、信息安全",
    "传媒": "传媒：游戏、广告营销、影视院线、出版、数字媒体、社交",
    "通信": "通信：通信服务、运营商、通信设备、光模块、5G",
    "煤炭": "煤炭：煤炭开采、焦炭、动力煤、焦煤",
    "石油石化": "石油石化：石油开采、炼化、油服工程、油气",
    "环保": "环保：环境治理、固废处理、水务、环保设备",
    "美容护理": "美容护理：个护用品、化妆品、医疗美容",
}


def default_taxonomy(lang: str) -> dict[str, str]:
    """Shenwan level-1 for Chinese, GICS sectors otherwise (a copy, safe to edit)."""
    return dict(SHENWAN_L1 if lang.lower().startswith("zh") else GICS_SECTORS)


def document_lead(doc: Document, chars: int = 300) -> str:
    """The document's title and the start of its text, on which industry is judged."""
    lead = " ".join(doc.text[: chars * 2].split())[:chars]
    return f"{doc.title}\n{lead}".strip()


def classify_by_embedding(
    texts: Sequence[str],
    taxonomy: Mapping[str, str],
    embedder: Any,
    *,
    min_similarity: float = 0.0,
) -> list[str]:
    """The taxonomy label nearest to each text (cosine), or ``"unknown"`` below the floor.

    Args:
        texts: what to classify (e.g. ``document_lead(doc)``).
        taxonomy: label -> description; descriptions are embedded.
        embedder: an object with ``encode(texts, kind=...)`` returning L2-normalized rows.
        min_similarity: best similarity below this gives ``"unknown"``.
    """
    if not texts:
        return []
    labels = list(taxonomy)
    if not labels:
        return [UNKNOWN_INDUSTRY] * len(texts)
    lab = np.asarray(embedder.encode([taxonomy[k] for k in labels], kind="query"))
    vec = np.asarray(embedder.encode(list(texts), kind="query"))
    sims = vec @ lab.T
    best = sims.argmax(axis=1)
    return [
        labels[j] if sims[i, j] >= min_similarity else UNKNOWN_INDUSTRY for i, j in enumerate(best)
    ]


class IndustryTask(LLMTask[Document, Document]):
    """LLM zero-shot industry classification; the reply may only name a taxonomy label.

    Items are Documents; ``parse`` returns the document with ``industry`` set.
    """

    name = "industry"
    template = "industry"

    def __init__(self, taxonomy: Mapping[str, str], *, lang: str, lead_chars: int = 300) -> None:
        if not taxonomy:
            raise ValueError("taxonomy is empty")
        super().__init__(lang=lang)
        self.taxonomy, self.lead_chars = dict(taxonomy), lead_chars
        choice = Literal[tuple(self.taxonomy)]  # type: ignore[valid-type]
        self.response_model = create_model("IndustryReply", industry=choice)  # type: ignore[misc]

    def item_id(self, item: Document) -> str:
        return item.doc_id

    def build(self, item: Document) -> list[dict[str, str]]:
        options = [{"label": k, "description": v} for k, v in self.taxonomy.items()]
        return self.render(options=options, document=document_lead(item, self.lead_chars))

    def request_params(self, item: Document) -> dict[str, Any]:
        return {"temperature": 0.0, "max_tokens": 64}

    def parse(self, item: Document, reply: Any, completion: Completion) -> list[Document]:
        label = getattr(reply, "industry", None)
        if label not in self.taxonomy:
            raise RowRejected("unknown_industry", str(label))
        return [item.model_copy(update={"industry": label})]
