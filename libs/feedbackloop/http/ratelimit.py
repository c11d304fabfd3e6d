"""Per-API-key rate limiting: a token bucket per key, held in this process.

The buckets live in memory, so the limit applies per replica: behind a load balancer spreading a
key's requests over N ingest (or query) processes, that key may make up to N times the configured
rate in all. That is deliberate: a shared store would put a network round trip and a new point of
failure in front of every event, while the limit's purpose (stop one runaway client from starving
the others on a replica) holds per replica.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucketLimiter:
    """Each key gets a bucket of `burst` tokens refilled at `rate_per_second`; a request takes one.

    `acquire(key)` never blocks: it returns 0.0 when the request may proceed, otherwise the seconds
    until a token will be available (the request is then refused and takes nothing). A rate of 0
    disables limiting. At most `max_keys` buckets are kept; past that, the full (idle) ones are
    forgotten, which loses nothing since a new bucket starts full.
    """

    def __init__(
        self,
        *,
        rate_per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate_per_second < 0 or burst < 1:
            raise ValueError("rate_per_second must be >= 0 and burst >= 1")
        self.rate_per_second = rate_per_second
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of)

    @property
    def enabled(self) -> bool:
        return self.rate_per_second > 0

    def acquire(self, key: str) -> float:
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_second

    def _tokens(self, key: str, now: float) -> float:
        held = self._buckets.get(key)
        if held is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_idle(now)
            return self.burst
        tokens, as_of = held
        return min(self.burst, tokens + (now - as_of) * self.rate_per_second)

    def _forget_idle(self, now: float) -> None:
        idle = [key for key in self._buckets if self._tokens(key, now) >= self.burst]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            # Every bucket is in use: keep memory bounded; a forgotten key starts with a full burst.
            self._buckets.clear()


def retry_after_header(wait_seconds: float) -> str:
    """`Retry-After` is whole seconds (RFC 9110); never 0, which would invite an instant retry."""
    return str(max(1, math.ceil(wait_seconds)))
