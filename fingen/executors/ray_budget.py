"""One budget for every Ray actor of a run: a ``BudgetKeeper`` actor holds it, and each
worker's engine reserves and settles through a ``RemoteBudget``."""

from __future__ import annotations

from typing import Any

from fingen.errors import BudgetExceeded

__all__ = ["BudgetKeeper", "RemoteBudget"]


class BudgetKeeper:
    """The run's budget in one actor: every worker reserves and settles here."""

    def __init__(self, max_tokens: Any, max_cost: Any, spent_tokens: int, spent_cost: float):
        from fingen.llm.budget import Budget

        self.budget = Budget(max_tokens, max_cost, spent_tokens=spent_tokens, spent_cost=spent_cost)

    def reserve(self, tokens: int, cost: float) -> tuple[int, float, Any]:
        try:
            r = self.budget.reserve(tokens, cost)
        except BudgetExceeded as exc:
            return 0, 0.0, (exc.what, exc.used, exc.limit)
        return r.tokens, r.cost, None

    def settle(self, held_tokens: int, held_cost: float, tokens: int, cost: float) -> None:
        from fingen.llm.budget import Reservation

        self.budget.settle(Reservation(held_tokens, held_cost), tokens, cost)


class RemoteBudget:
    """``Budget``'s interface over a ``BudgetKeeper`` actor."""

    def __init__(self, handle: Any, max_tokens: Any = None, max_cost: Any = None) -> None:
        self.handle, self.max_tokens, self.max_cost = handle, max_tokens, max_cost
        self.spent_tokens, self.spent_cost = 0, 0.0

    @property
    def active(self) -> bool:
        return True

    def reserve(self, tokens: int, cost: float) -> Any:
        import ray

        from fingen.llm.budget import Reservation

        t, c, refused = ray.get(self.handle.reserve.remote(tokens, cost))
        if refused is not None:
            raise BudgetExceeded(*refused)
        return Reservation(t, c)

    def settle(self, reservation: Any, tokens: int = 0, cost: float = 0.0) -> None:
        self.handle.settle.remote(reservation.tokens, reservation.cost, tokens, cost)
        self.spent_tokens += tokens
        self.spent_cost += cost
