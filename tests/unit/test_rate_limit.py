"""The per-key token bucket: burst, refill, independence of keys, the wait it reports."""

from __future__ import annotations

import pytest

from feedbackloop.http.ratelimit import TokenBucketLimiter, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_the_burst_then_refuses_with_the_wait_until_a_token() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(rate_per_second=2, burst=3, clock=clock)
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    clock.now += 0.25
    assert limiter.acquire("k") == pytest.approx(0.25)  # refusals take nothing
    clock.now += 0.25
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") == pytest.approx(0.5)


def test_refill_is_capped_at_the_burst() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(rate_per_second=10, burst=2, clock=clock)
    limiter.acquire("k")
    clock.now += 3_600
    assert [limiter.acquire("k") > 0 for _ in range(3)] == [False, False, True]


def test_keys_have_their_own_buckets() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(rate_per_second=1, burst=1, clock=clock)
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_a_rate_of_zero_disables_limiting() -> None:
    limiter = TokenBucketLimiter(rate_per_second=0, burst=1, clock=Clock())
    assert not limiter.enabled
    assert all(limiter.acquire("k") == 0.0 for _ in range(10_000))


def test_memory_is_bounded_and_idle_keys_are_forgotten_first() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(rate_per_second=1, burst=2, clock=clock, max_keys=3)
    limiter.acquire("busy")
    limiter.acquire("busy")
    limiter.acquire("idle-1")
    limiter.acquire("idle-2")
    clock.now += 1.0  # idle-1 and idle-2 are full again; busy has 1 of its 2 tokens
    limiter.acquire("new")
    # busy was kept with its 1 token; a forgotten bucket would have started full with 2.
    assert [limiter.acquire("busy") > 0 for _ in range(2)] == [False, True]
    assert limiter.acquire("idle-1") == 0.0


@pytest.mark.parametrize(("wait", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30.0, "30")])
def test_retry_after_is_whole_seconds_and_never_zero(wait: float, header: str) -> None:
    assert retry_after_header(wait) == header
