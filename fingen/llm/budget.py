"""A run's token and cost budget, shared by every model of the run.

Each request reserves its worst case (estimated prompt tokens + ``max_tokens``, priced) before
it is sent and settles the actual usage when it returns, so concurrent requests cannot
overshoot the limit together: a request that would not fit is refused. What a run can spend
beyond its limit is bounded by how far prompts exceed their estimate (Chinese text is
counted one token per character, other text one per 4 characters), summed over the requests
holding a reservation at once (at most the task window, 2 x concurrency). The spent amounts carry over between invocations on the same run
directory (``spent_tokens`` / ``spent_cost`` at construction).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from fingen.errors import BudgetExceeded

__all__ = ["Budget", "Reservation", "estimate_tokens"]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish estimate of a text's tokens (CJK: 1 per character, else 1 per 4)."""
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk) // 4 + 1


@dataclass
class Reservation:
    tokens: int
    cost: float


class Budget:
    """Limits on tokens and cost across all models of a run (None: unlimited)."""

    def __init__(
        self,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        *,
        spent_tokens: int = 0,
        spent_cost: float = 0.0,
    ) -> None:
        self.max_tokens, self.max_cost = max_tokens, max_cost
        self.spent_tokens, self.spent_cost = spent_tokens, spent_cost
        self.reserved_tokens, self.reserved_cost = 0, 0.0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.max_tokens is not None or self.max_cost is not None

    def reserve(self, tokens: int, cost: float) -> Reservation:
        """Hold a request's worst case; raises BudgetExceeded when it does not fit."""
        with self._lock:
            if self.max_tokens is not None:
                need = self.spent_tokens + self.reserved_tokens + tokens
                if need > self.max_tokens:
                    raise BudgetExceeded("tokens", self.spent_tokens, self.max_tokens)
            if self.max_cost is not None:
                need_cost = self.spent_cost + self.reserved_cost + cost
                if need_cost > self.max_cost + 1e-12:
                    raise BudgetExceeded("cost", self.spent_cost, self.max_cost)
            self.reserved_tokens += tokens
            self.reserved_cost += cost
            return Reservation(tokens, cost)

    def settle(self, reservation: Reservation, tokens: int = 0, cost: float = 0.0) -> None:
        """Replace a reservation by what the request really used (0 when it failed)."""
        with self._lock:
            self.reserved_tokens -= reservation.tokens
            self.reserved_cost -= reservation.cost
            self.spent_tokens += tokens
            self.spent_cost += cost
