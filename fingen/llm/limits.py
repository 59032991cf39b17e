"""Request and token rate limits (RPM/TPM) as async token buckets."""

from __future__ import annotations

import asyncio
import time

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """Refills ``rate_per_min`` units per minute, holds at most one minute's worth."""

    def __init__(self, rate_per_min: float) -> None:
        self.capacity = float(rate_per_min)
        self.rate = rate_per_min / 60.0
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)
        async with self._lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)


class RateLimiter:
    """Optional RPM and TPM limits; TPM uses an estimate (prompt chars / 4 + max_tokens)."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(estimated_tokens)
