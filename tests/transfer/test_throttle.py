"""Token buckets and throttles on a fake clock: no real sleeping anywhere.

``simulate`` plays several transfers against their throttles in virtual time: each flow
moves one chunk, books it, and is next due when its wait is over (exactly what the copy
loops do with real sleeps).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from fsftpd.transfer.throttle import (
    BURST_SECONDS,
    CHUNK,
    CHUNK_SECONDS,
    MIN_CHUNK,
    Throttle,
    TokenBucket,
)

KB = 1000
MB = 1000 * 1000
LINK = 1e9  # bytes/s of the simulated network: an unthrottled chunk still takes some time

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Flow:
    throttle: Throttle
    size: int | None = None  # stop after this many bytes (None: run until the end)
    start: float = 0.0
    moved: int = 0
    due: float = 0.0
    finished_at: float | None = None
    log: list[tuple[float, int]] = field(default_factory=list)


def simulate(clock: FakeClock, flows: list[Flow], seconds: float) -> None:
    """Run ``flows`` for ``seconds`` of virtual time from ``clock.now``; a flow moves a chunk,
    books it and is due again when its wait (or the chunk's time on a 1 GB/s link) is over."""
    origin = clock.now
    for flow in flows:
        flow.due = origin + flow.start
    end = origin + seconds
    while True:
        running = [f for f in flows if f.finished_at is None and f.due <= end]
        if not running:
            break
        flow = min(running, key=lambda f: f.due)
        clock.now = flow.due
        chunk = flow.throttle.chunk_size(1 << 20)
        if flow.size is not None:
            chunk = min(chunk, flow.size - flow.moved)
        flow.moved += chunk
        flow.log.append((clock.now - origin, flow.moved))
        delay = flow.throttle.delay(chunk)
        flow.due = clock.now + max(delay, chunk / LINK)
        if flow.size is not None and flow.moved >= flow.size:
            flow.finished_at = flow.due - origin  # the copy loop's last wait ends the transfer
    clock.now = end


def moved_at(flow: Flow, t: float) -> int:
    """Bytes the flow had moved by virtual time ``t``."""
    before = [moved for when, moved in flow.log if when <= t]
    return before[-1] if before else 0


# -- single bucket -----------------------------------------------------------------------

def test_unlimited_bucket_never_waits() -> None:
    clock = FakeClock()
    bucket = TokenBucket(None, clock=clock)
    assert all(bucket.book(10 * MB) == 0.0 for _ in range(100))
    assert bucket.rate is None


@pytest.mark.parametrize("value", [None, 0, -5, 0.0])
def test_none_zero_and_negative_rates_mean_no_limit(value: float | None) -> None:
    bucket = TokenBucket(value, clock=FakeClock())
    assert bucket.rate is None
    assert bucket.book(1 << 30) == 0.0
    assert not Throttle([bucket]).active


@pytest.mark.parametrize("rate", [100 * KB, 1 * MB, 50 * MB])
def test_a_transfer_lands_on_its_rate_small_and_large(rate: float) -> None:
    clock = FakeClock()
    size = int(rate * 2)  # a two-second transfer
    flow = Flow(Throttle([TokenBucket(rate, clock=clock)]), size=size)
    simulate(clock, [flow], 10)
    assert flow.finished_at is not None
    # Exactly size/rate, less the burst the bucket lets a fresh transfer run ahead.
    assert flow.finished_at == pytest.approx(size / rate - BURST_SECONDS, abs=1e-6)


def test_booking_returns_the_time_until_the_sender_is_back_within_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock, burst=0.5)
    assert bucket.book(500) == 0.0  # 0.5 s of traffic: exactly the burst
    assert bucket.book(1000) == pytest.approx(1.0)
    clock.advance(1.0)
    assert bucket.book(100) == pytest.approx(0.1)
    assert bucket.backlog == pytest.approx(0.6)


def test_burst_is_bounded_even_after_a_long_idle_period() -> None:
    clock = FakeClock()
    rate = 1 * MB
    bucket = TokenBucket(rate, clock=clock)
    bucket.book(5 * MB)  # a busy past...
    clock.advance(3600)  # ...then an hour of silence
    free = 0
    while bucket.book(CHUNK) == 0.0:
        free += CHUNK
    # Idle time is not saved up: what passes without waiting is the burst, not an hour.
    assert free <= rate * BURST_SECONDS
    assert free + CHUNK > rate * BURST_SECONDS


def test_the_burst_never_lets_a_long_transfer_run_ahead() -> None:
    clock = FakeClock()
    rate = 200 * KB
    flow = Flow(Throttle([TokenBucket(rate, clock=clock)]))
    simulate(clock, [flow], 5)
    for when, moved in flow.log:
        # Bytes moved by time t never exceed rate * (t + burst) plus the chunk in flight.
        assert moved <= rate * (when + BURST_SECONDS) + flow.throttle.chunk_size(1 << 20)


# -- several levels ------------------------------------------------------------------------

@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_the_tightest_level_wins_whatever_the_order(order: tuple[int, ...]) -> None:
    clock = FakeClock()
    rates = [1 * MB, 100 * KB, None, 500 * KB]  # server, connection, user, user-connection
    buckets = [TokenBucket(rates[i], clock=clock) for i in order]
    throttle = Throttle(buckets)
    assert throttle.rate == 100 * KB
    flow = Flow(throttle, size=200 * KB)
    simulate(clock, [flow], 10)
    assert flow.finished_at == pytest.approx(2.0 - BURST_SECONDS, abs=1e-6)


def test_no_level_limits_means_no_waiting_and_the_default_chunk() -> None:
    throttle = Throttle([TokenBucket(None), TokenBucket(lambda: None)])
    assert not throttle.active
    assert throttle.rate is None
    assert throttle.chunk_size(123456) == 123456
    assert throttle.delay(1 << 30) == 0.0


def test_two_transfers_sharing_a_level_share_it_equally() -> None:
    clock = FakeClock()
    shared = TokenBucket(1 * MB, clock=clock)
    a = Flow(Throttle([shared, TokenBucket(None, clock=clock)]))
    b = Flow(Throttle([shared, TokenBucket(None, clock=clock)]), start=0.3)
    simulate(clock, [a, b], 10.3)
    # From the moment both run, each gets half of the shared rate.
    for flow in (a, b):
        rate = (moved_at(flow, 10.0) - moved_at(flow, 2.0)) / 8.0
        assert rate == pytest.approx(0.5 * MB, rel=0.02)
    # Together they never exceed the shared rate.
    total = moved_at(a, 10.0) + moved_at(b, 10.0)
    assert total <= 1 * MB * (10.0 + BURST_SECONDS) + 2 * CHUNK


def test_a_transfer_held_back_elsewhere_leaves_its_share_to_the_others() -> None:
    """Max-min fairness: server level 1 MB/s shared by two transfers, one of which has a
    per-connection limit of 200 kB/s: that one gets 200 kB/s, the other the rest."""
    clock = FakeClock()
    server = TokenBucket(1 * MB, clock=clock)
    slow = Flow(Throttle([server, TokenBucket(200 * KB, clock=clock)]))
    fast = Flow(Throttle([server, TokenBucket(None, clock=clock)]))
    simulate(clock, [slow, fast], 10)
    slow_rate = (moved_at(slow, 9.0) - moved_at(slow, 1.0)) / 8.0
    fast_rate = (moved_at(fast, 9.0) - moved_at(fast, 1.0)) / 8.0
    assert slow_rate == pytest.approx(200 * KB, rel=0.03)
    assert fast_rate == pytest.approx(800 * KB, rel=0.03)


def test_user_level_is_shared_by_that_users_sessions_only() -> None:
    """Server 3 MB/s; alice's two sessions share her 1 MB/s user limit; bob has none."""
    clock = FakeClock()
    server = TokenBucket(3 * MB, clock=clock)
    alice = TokenBucket(1 * MB, clock=clock)
    bob = TokenBucket(None, clock=clock)

    def session(user: TokenBucket) -> Flow:
        return Flow(Throttle([server, TokenBucket(None, clock=clock), user, TokenBucket(None, clock=clock)]))

    a1, a2, b1 = session(alice), session(alice), session(bob)
    simulate(clock, [a1, a2, b1], 10)

    def rate(flow: Flow) -> float:
        return (moved_at(flow, 9.0) - moved_at(flow, 1.0)) / 8.0

    assert rate(a1) == pytest.approx(0.5 * MB, rel=0.03)
    assert rate(a2) == pytest.approx(0.5 * MB, rel=0.03)
    assert rate(b1) == pytest.approx(2 * MB, rel=0.03)


def test_three_transfers_on_one_level_each_get_a_third() -> None:
    clock = FakeClock()
    shared = TokenBucket(900 * KB, clock=clock)
    flows = [Flow(Throttle([shared])) for _ in range(3)]
    simulate(clock, flows, 6)
    for flow in flows:
        assert (moved_at(flow, 5.0) - moved_at(flow, 1.0)) / 4.0 == pytest.approx(300 * KB, rel=0.03)


# -- limits changed while transfers run -----------------------------------------------------

class Setting:
    def __init__(self, value: float | None) -> None:
        self.value = value

    def __call__(self) -> float | None:
        return self.value


@pytest.mark.parametrize(("before", "after"), [(100 * KB, 1 * MB), (1 * MB, 100 * KB), (None, 200 * KB),
                                               (200 * KB, None)])
def test_a_rate_change_applies_to_a_running_transfer(before: float | None, after: float | None) -> None:
    clock = FakeClock()
    setting = Setting(before)
    flow = Flow(Throttle([TokenBucket(setting, clock=clock)]))
    simulate(clock, [flow], 2.0)
    at_change = flow.moved
    setting.value = after
    if after is None:
        # Lifted: the transfer no longer waits at all.
        assert flow.throttle.delay(10 * MB) <= CHUNK_SECONDS
        return
    # Waits already booked at the old rate end within one chunk of it...
    simulate(clock, [flow], 0.2)
    settled = flow.moved
    # ...and from then on the new rate holds.
    simulate(clock, [flow], 3.0)
    assert (flow.moved - settled) / 3.0 == pytest.approx(after, rel=0.03)
    assert at_change > 0


def test_setting_the_rate_attribute_replaces_the_source() -> None:
    clock = FakeClock()
    bucket = TokenBucket(None, clock=clock)
    bucket.rate = lambda: 1000
    assert bucket.rate == 1000.0
    bucket.rate = 2000
    assert bucket.rate == 2000.0


def test_no_debt_from_an_unlimited_past() -> None:
    clock = FakeClock()
    setting = Setting(None)
    bucket = TokenBucket(setting, clock=clock)
    bucket.book(100 * MB)
    setting.value = 1 * MB
    assert bucket.book(1000) == 0.0  # a new limit starts fresh, not 100 s in debt


# -- chunk sizes -----------------------------------------------------------------------------

def test_throttled_transfers_book_equal_chunks_so_sharing_is_fair() -> None:
    sizes = {Throttle([TokenBucket(rate)]).chunk_size(1 << 20) for rate in (1 * MB, 5 * MB, 50 * MB, 1e9)}
    assert sizes == {CHUNK}


def test_chunks_shrink_at_low_rates_but_not_below_the_minimum() -> None:
    assert Throttle([TokenBucket(100 * KB)]).chunk_size(1 << 20) == int(100 * KB * CHUNK_SECONDS)
    assert Throttle([TokenBucket(10)]).chunk_size(1 << 20) == MIN_CHUNK
    assert Throttle([TokenBucket(50 * MB)]).chunk_size(1000) == 1000  # never above the caller's


def test_chunk_follows_a_rate_change() -> None:
    setting = Setting(50 * MB)
    throttle = Throttle([TokenBucket(setting)])
    assert throttle.chunk_size(1 << 20) == CHUNK
    setting.value = 20 * KB
    assert throttle.chunk_size(1 << 20) == int(20 * KB * CHUNK_SECONDS)


# -- the one async entry point, with an injected sleep ---------------------------------------

async def test_wait_sleeps_through_the_injected_sleep_only_when_needed() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    throttle = Throttle([TokenBucket(1000, clock=clock, burst=0.0)], sleep=fake_sleep)
    await throttle.wait(500)
    await throttle.wait(500)
    assert slept == [pytest.approx(0.5), pytest.approx(0.5)]
    clock.advance(10)
    slept.clear()
    unlimited = Throttle([TokenBucket(None, clock=clock)], sleep=fake_sleep)
    await unlimited.wait(1 << 30)
    assert slept == []
