"""One redaction for everything fingen writes or prints: secrets never leave the process.

``redact(text)`` removes URL userinfo (``http://user:secret@host``), ``Authorization``
header values, bearer tokens and Basic credentials, and the values of every secret fingen
knows of: the variables named by ``api_key_env`` settings (registered with
``register_secret_env``) and the usual token variables (``HF_TOKEN``,
``HUGGING_FACE_HUB_TOKEN``, ``OPENAI_API_KEY``). ``redacted_config`` does the same for a
config (secret-looking keys are blanked too).
"""

from __future__ import annotations

import base64
import os
import re
import threading
from typing import Any

__all__ = ["redact", "redact_value", "redacted_config", "register_secret_env"]

REDACTED = "<redacted>"
_DEFAULT_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY")
_SECRET_KEYS = {"api_key", "apikey", "token", "hf_token", "password", "secret", "authorization"}
_SECRET_SUFFIXES = ("_api_key", "_secret", "_password", "_token")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_AUTH = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)((?:bearer|basic)\s+)?[^\s'\",}]+")
# a bearer token: a long run with a digit in it ("bearer bonds" stays as it is)
_BEARER = re.compile(r"(?i)\bbearer\s+(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{12,}")
_BASIC = re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{4,}={0,2})")
_lock = threading.Lock()
_envs: set[str] = set(_DEFAULT_ENVS)


def register_secret_env(name: str | None) -> None:
    """Treat the value of environment variable ``name`` as a secret from now on."""
    if name:
        with _lock:
            _envs.add(name)


def _secret_values() -> list[str]:
    with _lock:
        names = list(_envs)
    values = {os.environ.get(n, "") for n in names}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def _basic(match: re.Match[str]) -> str:
    """``Basic <base64 of user:password>`` (a Basic credential) without the credential."""
    try:
        decoded = base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except ValueError:
        return match.group(0)
    return f"Basic {REDACTED}" if ":" in decoded else match.group(0)


def redact(text: str) -> str:
    """``text`` without URL credentials, authorization values and known secret values."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    out = _AUTH.sub(lambda m: f"{m.group(1)}{REDACTED}", out)
    out = _BEARER.sub(f"Bearer {REDACTED}", out)
    out = _BASIC.sub(_basic, out)
    for value in _secret_values():
        out = out.replace(value, REDACTED)
    return out


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    if k.endswith("_env") or k.startswith("max_"):  # names of env vars; token *limits*
        return False
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def redact_value(obj: Any) -> Any:
    """A JSON-like value with secret-looking keys blanked and every string redacted."""
    if isinstance(obj, dict):
        return {
            k: (REDACTED if _is_secret_key(str(k)) and v else redact_value(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact_value(v) for v in obj]
    return redact(obj) if isinstance(obj, str) else obj


def redacted_config(config: Any) -> dict[str, Any]:
    """A pydantic config as a dict with secret values removed (key and env var names kept)."""
    return redact_value(config.model_dump(mode="json"))
