"""Structured output: pydantic schema -> JSON in the model's reply -> validated object.

Parsing is lenient about wrapping (code fences, prose around the object) and strict about
content (the pydantic model decides). The re-ask message shows the model its error.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from fingen.errors import ParseFailure

__all__ = ["ParseFailure", "extract_json", "parse_model", "reask_message", "schema_instruction"]


def extract_json(text: str) -> Any:
    """Parse the first JSON object or array in ``text`` (fences and prose are ignored)."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0]
    try:
        return json.loads(s)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(s):
        if ch in "{[":
            try:
                return decoder.raw_decode(s, i)[0]
            except ValueError:
                continue
    raise ParseFailure("invalid_json", f"no JSON object found in reply: {text[:120]!r}")


def parse_model(text: str, model: type[BaseModel]) -> BaseModel:
    """Extract JSON from ``text`` and validate it against ``model``."""
    data = extract_json(text)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'root'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ParseFailure("schema_mismatch", problems) from None


_INSTRUCTION = {
    "en": "Reply with only a JSON object that matches this JSON schema:\n",
    "zh": "只回复一个符合以下 JSON Schema 的 JSON 对象，不要输出其他内容：\n",
}
_REASK = {
    "en": "Your previous reply could not be used ({reason}: {detail}). "
    "Reply again with only the corrected JSON object.",
    "zh": "你上一次的回复无法使用（{reason}：{detail}）。请只回复修正后的 JSON 对象。",
}


def _lang(lang: str) -> str:
    return "zh" if lang.lower().startswith("zh") else "en"


def schema_instruction(schema: dict[str, Any], lang: str = "en") -> str:
    """A short instruction appended to the prompt so small models see the schema too."""
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    return _INSTRUCTION[_lang(lang)] + text


def reask_message(failure: ParseFailure, lang: str = "en") -> dict[str, str]:
    """The user message that asks the model to fix its previous reply (in ``lang``)."""
    text = _REASK[_lang(lang)].format(reason=failure.reason, detail=failure.detail)
    return {"role": "user", "content": text}
