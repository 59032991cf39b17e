"""The scripted server's script (queue, rules, default, records) and what an action answers.

Each chat request takes the next action from (a) the queue, consumed in order, else (b) the
first matching rule, else (c) the default action. The action and rule formats are described
in ``tests/scripted_server.py``; :func:`completion_body` turns a 2xx action into an OpenAI
chat.completion body.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

from fingen.llm.fake import schema_instance

__all__ = [
    "MALFORMED_JSON",
    "Action",
    "Script",
    "completion_body",
    "fail_then",
    "request_schema",
]

MALFORMED_JSON = '{"answer": "unterminated, "items": [1, 2,'
Action = dict[str, Any]


def fail_then(n: int, failure: Action | None = None, success: Action | None = None) -> list[Action]:
    """``n`` failures (default 500) then a success (default schema echo), for ``actions``."""
    return [dict(failure or {"status": 500})] * n + [dict(success or {})]


# --- schema echo -------------------------------------------------------------------------


def request_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks for (json_schema, json_object+schema, guided_json)."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    if fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    guided = body.get("guided_json")
    return json.loads(guided) if isinstance(guided, str) else guided


# --- script state --------------------------------------------------------------------------


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


class Script:
    """Queue, rules, default, counters and request records; thread-safe."""

    def __init__(
        self,
        actions: list[Action] | None,
        rules: list[dict[str, Any]] | None,
        default: Action | None,
    ) -> None:
        self.lock = threading.Lock()
        self.queue: list[Action] = []
        self.rules: list[dict[str, Any]] = []
        self.default: Action = {}
        self.replace(actions=actions or [], rules=rules or [], default=default or {})
        self.reset()

    def replace(
        self,
        *,
        actions: list[Action] | None = None,
        rules: list[dict] | None = None,
        default: Action | None = None,
        append: bool = False,
    ) -> None:
        """Replace (or extend, with ``append``) the parts given; ``None`` leaves one as is."""
        with self.lock:
            if actions is not None:
                self.queue = [*self.queue, *actions] if append else list(actions)
            if rules is not None:
                self.rules = [*self.rules, *rules] if append else list(rules)
                self.rule_uses: Counter[Any] = Counter()
            if default is not None:
                self.default = dict(default)

    def reset(self) -> None:
        """Forget requests, counts and rule uses (the script stays)."""
        with self.lock:
            self.records: list[dict[str, Any]] = []
            self.status_counts: Counter[int] = Counter()
            self.rule_uses = Counter()

    def choose(self, body: dict[str, Any]) -> tuple[Action, dict[str, Any]]:
        """Pick the action for one request and record the request."""
        messages = body.get("messages") or []
        with self.lock:
            source, action = "default", self.default
            if self.queue:
                source, action = "queue", self.queue.pop(0)
            else:
                for i, rule in enumerate(self.rules):
                    picked = self._apply(i, rule, messages)
                    if picked is not None:
                        source, action = f"rule{i}", picked
                        break
            record = {
                "index": len(self.records),
                "model": body.get("model"),
                "messages": messages,
                "response_format": body.get("response_format"),
                "temperature": body.get("temperature"),
                "seed": body.get("seed"),
                "max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
                "body": body,
                "source": source,
                "status": None,
                "time": time.time(),
            }
            self.records.append(record)
        return action, record

    def _apply(self, i: int, rule: dict[str, Any], messages: list[dict]) -> Action | None:
        if "match" in rule or "regex" in rule:
            if rule.get("in", "last_user") == "any":
                haystack = "\n".join(_text(m) for m in messages)
            else:
                users = [m for m in messages if m.get("role") == "user"]
                haystack = _text(users[-1]) if users else ""
            if "match" in rule and rule["match"] not in haystack:
                return None
            if "regex" in rule and not re.search(rule["regex"], haystack):
                return None
        key = (i, json.dumps(messages, sort_keys=True)) if rule.get("per_prompt") else i
        uses = self.rule_uses[key]
        if rule.get("times") is not None and uses >= rule["times"]:
            return None
        self.rule_uses[key] = uses + 1
        if "actions" in rule:
            return rule["actions"][min(uses, len(rule["actions"]) - 1)]
        return rule.get("action", {})

    def finish(self, record: dict[str, Any], status: int) -> None:
        with self.lock:
            record["status"] = status
            self.status_counts[status] += 1

    def stats(self, with_requests: bool = True) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {
                "count": len(self.records),
                "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
                "queue_left": len(self.queue),
            }
            if with_requests:
                out["requests"] = [dict(r) for r in self.records]
        return out


# --- answers -----------------------------------------------------------------------------


def completion_body(action: Action, body: dict[str, Any], n: int) -> tuple[dict[str, Any], str]:
    """The OpenAI chat.completion body for a 2xx action, and its content."""
    if "content" in action:
        content = str(action["content"])
    elif "json" in action:
        content = json.dumps(action["json"])
    elif action.get("malformed"):
        content = action["malformed"] if isinstance(action["malformed"], str) else MALFORMED_JSON
    else:
        schema = request_schema(body)
        content = json.dumps(schema_instance(schema) if schema else {})
    finish = action.get("finish_reason", "stop")
    if action.get("truncate"):
        content, finish = (
            content[: len(content) // 2],
            action.get("finish_reason", "length"),
        )
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if "reasoning" in action:
        message["reasoning_content"] = action["reasoning"]
    prompt = sum(len(_text(m)) for m in body.get("messages") or []) // 4 + 1
    usage = {"prompt_tokens": prompt, "completion_tokens": len(content) // 4 + 1}
    usage |= action.get("usage", {})
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": f"chatcmpl-scripted{n:08d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": action.get("model", body.get("model") or "scripted"),
        "system_fingerprint": "fp_scripted",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }, content
