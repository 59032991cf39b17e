"""fingen's exceptions: one base, specific subclasses that carry context.

Tree::

    FingenError
    ├── UserError (also ValueError): the user can fix it; the CLI prints one line, exit 2
    │   ├── ConfigError          bad YAML, unknown key, bad value
    │   ├── InputError           missing file, unreadable input
    │   ├── MissingExtraError    an optional extra is not installed
    │   ├── BackendRejected      the server refuses every request (401/403/404: key, model, URL)
    │   └── PublishError         no token, bad repo id, upload failed
    ├── DocumentError            one bad document (skipped and reported, never fatal)
    ├── RowRejected              a task rejects one item's reply (kept as a Failure record)
    ├── LLMError                 a model request failed after its retries
    │   ├── TransportError       HTTP/connection failure after transport retries
    │   ├── ParseFailure         one reply is not valid JSON / misses the schema (re-asked)
    │   ├── StructuredOutputError  output failed to parse/validate after re-asks
    │   └── BudgetExceeded       a token/cost budget was reached; the run stops cleanly
    ├── BackendStartError        the embedded model server did not start
    └── StoreError               the run directory is inconsistent
        └── RunLocked (also UserError)  another fingen process writes this run directory

    Interrupted (BaseException)  Ctrl-C or SIGTERM: the run stops, finished work is kept
"""

from __future__ import annotations

__all__ = [
    "BackendRejected",
    "BackendStartError",
    "BudgetExceeded",
    "ConfigError",
    "DocumentError",
    "FingenError",
    "InputError",
    "Interrupted",
    "LLMError",
    "MissingExtraError",
    "ParseFailure",
    "PublishError",
    "RowRejected",
    "RunLocked",
    "StoreError",
    "StructuredOutputError",
    "TransportError",
    "UserError",
]


class FingenError(Exception):
    """Base of every error fingen raises on purpose."""


class UserError(FingenError, ValueError):
    """A mistake the user can fix (config, paths, options)."""


class ConfigError(UserError):
    """Invalid pipeline or configuration; `where` names the offending key."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class InputError(UserError):
    """An input path is missing or unusable as a whole."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class MissingExtraError(UserError):
    """An optional dependency is needed; the message says which extra installs it."""

    EXTRAS = frozenset({"local", "topics", "faiss", "vllm", "ray", "dev", "train"})

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package, self.extra = package, extra
        how = (
            f"pip install 'fingen[{extra}]'" if extra in self.EXTRAS else f"pip install '{package}'"
        )
        super().__init__(f"{purpose} needs the '{package}' package: {how}")


class BackendRejected(UserError):
    """The model server refused the request in a way no retry fixes (bad key, model or URL)."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class PublishError(UserError):
    """Publishing to the hub failed; the local folder is kept."""


class DocumentError(FingenError):
    """One input document cannot be used; it is skipped and reported."""

    def __init__(self, reason: str, *, source: str, detail: str = "") -> None:
        self.reason, self.source, self.detail = reason, source, detail
        super().__init__(f"{source}: {reason}" + (f" ({detail})" if detail else ""))


class RowRejected(FingenError):
    """Raised by a task's ``parse`` when an item's reply gives no usable record."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class LLMError(FingenError):
    """A model request failed."""


class ParseFailure(LLMError):
    """One reply is not valid JSON (``reason='invalid_json'``) or misses the schema
    (``'schema_mismatch'``); the engine re-asks with the error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class TransportError(LLMError):
    """The server could not be reached or kept failing after retries."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0) -> None:
        self.status, self.attempts = status, attempts
        super().__init__(message)


class StructuredOutputError(LLMError):
    """The model's output did not fit the schema after the allowed re-asks."""

    def __init__(self, reason: str, *, raw: str, attempts: int, detail: str = "") -> None:
        self.reason, self.raw, self.attempts, self.detail = reason, raw, attempts, detail
        super().__init__(f"{reason} after {attempts} attempt(s): {detail}"[:500])


class BudgetExceeded(LLMError):
    """The configured token or cost budget is used up."""

    def __init__(self, what: str, used: float, limit: float) -> None:
        self.what, self.used, self.limit = what, used, limit
        key = "max_tokens" if what == "tokens" else "max_cost"
        spent = f"{used:.0f} tokens" if what == "tokens" else f"${used:.4f}"
        limit_s = f"{limit:.0f}" if what == "tokens" else f"{limit:g}"
        super().__init__(
            f"budget reached: spent {spent} of llm.budget.{key}={limit_s} (the next request "
            f"would pass it); raise it with --set llm.budget.{key}=N and run the same command "
            "again to go on"
        )


class BackendStartError(FingenError):
    """The embedded model server failed to start or become ready."""


class StoreError(FingenError):
    """The run directory cannot be used."""


class RunLocked(StoreError, UserError):
    """Another fingen process holds the run directory's lock (one writer per run)."""

    def __init__(self, path: str, pid: str) -> None:
        self.path, self.pid = path, pid
        who = f"fingen process {pid}" if pid else "another fingen process"
        super().__init__(f"{path}: in use by {who}; wait for it to finish, or use another --out")


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM: raised in the main thread so the run stops cleanly.

    Not an ``Exception``: code that catches errors must not swallow it.
    """

    def __init__(self, signum: int = 2) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
