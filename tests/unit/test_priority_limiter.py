"""The shared request budget: its rate, and the most urgent waiter served first (real asyncio, real timers)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from airflow_runway.hooks.session import PriorityLimiter

RATE = 1200  # requests per minute: one every 50 ms, so the tests stay quick
SLACK = 0.001  # asyncio may run a timer up to its clock's resolution early


def strict() -> PriorityLimiter:
    """A budget that wakes its waiters one slot at a time, as the API's 60/min budget does (slots 1 s apart)."""
    return PriorityLimiter(RATE, min_tick=0)


async def test_requests_are_spaced_at_the_rate_the_first_one_at_once():
    limiter = strict()
    loop = asyncio.get_running_loop()
    start = loop.time()
    granted = []
    for _ in range(6):
        await limiter.acquire()
        granted.append(loop.time() - start)
    assert granted[0] < 0.01
    # The k-th request no earlier than k slots after the start. A grant's measured time can only be later than its
    # slot (the loop resumes the caller after granting), so gaps between two measured grants may look shorter on a
    # busy machine; the slots themselves never come closer than the interval.
    assert all(t >= k * limiter.interval - SLACK for k, t in enumerate(granted)), granted
    assert granted[-1] < 5 * limiter.interval + 0.2  # and not much slower either


async def test_concurrent_waiters_never_exceed_the_rate():
    limiter = strict()
    loop = asyncio.get_running_loop()
    start = loop.time()
    granted: list[float] = []

    async def one(urgency: float) -> None:
        await limiter.acquire(urgency)
        granted.append(loop.time() - start)

    await asyncio.gather(*(one(u % 3) for u in range(12)))
    granted.sort()
    assert all(t >= k * limiter.interval - SLACK for k, t in enumerate(granted)), granted


async def test_the_most_urgent_waiter_goes_first_ties_in_arrival_order():
    limiter = strict()
    await limiter.acquire()  # holds the slot: everyone below queues
    order: list[str] = []

    async def one(name: str, urgency: float) -> None:
        await limiter.acquire(urgency)
        order.append(name)

    tasks = []
    for name, urgency in [("low", 0.0), ("mid-1", 0.5), ("high", 1.0), ("mid-2", 0.5), ("low-2", 0.0)]:
        tasks.append(asyncio.create_task(one(name, urgency)))
        await asyncio.sleep(0)  # queued in this order
    await asyncio.gather(*tasks)
    assert order == ["high", "mid-1", "mid-2", "low", "low-2"]


async def test_without_urgencies_it_is_first_come_first_served():
    limiter = strict()
    order: list[int] = []

    async def one(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == list(range(5))


def slow() -> PriorityLimiter:
    """A strict budget with half-second slots: whether a waiter got the next slot or the one after is then
    told apart with a quarter of a second to spare, however busy the machine is."""
    return PriorityLimiter(120, min_tick=0)


async def test_a_cancelled_waiter_gives_its_turn_to_the_next():
    limiter = slow()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await limiter.acquire()
    urgent = asyncio.create_task(limiter.acquire(1.0))
    patient = asyncio.create_task(limiter.acquire(0.0))
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    urgent.cancel()
    await patient
    assert loop.time() - start < 1.5 * limiter.interval  # the next slot, not the one after
    with pytest.raises(asyncio.CancelledError):
        await urgent
    assert limiter.waiting == 0


async def test_a_waiter_that_times_out_raises_and_gives_up_its_turn():
    limiter = slow()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await limiter.acquire()
    with pytest.raises(asyncio.TimeoutError):
        await limiter.acquire(1.0, timeout=0.001)
    await limiter.acquire(timeout=5.0)
    assert loop.time() - start < 1.5 * limiter.interval  # the next slot, not the one after
    assert limiter.waiting == 0


async def test_at_a_fast_rate_waiters_wake_a_tick_at_a_time_within_the_budget():
    limiter = PriorityLimiter(RATE, min_tick=0.2)  # slots every 50 ms, woken four at a time
    per_tick = round(limiter.tick / limiter.interval)
    loop = asyncio.get_running_loop()
    granted: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        granted.append(loop.time())

    await asyncio.gather(*(one() for _ in range(24)))
    granted.sort()
    # Waiters woken together resume one after another in the same loop pass, microseconds apart (more on a busy
    # machine), and wake-ups are at least a slot apart: a gap of over half a slot starts a new wake-up.
    wake_ups = 1 + sum(1 for a, b in itertools.pairwise(granted) if b - a > limiter.interval / 2)
    # The first request at once, the second a slot later, then the other 22 a tick (4 slots) at a time.
    assert wake_ups <= 2 + -(-22 // per_tick), granted
    # No window holds more than the rate allows plus one tick's worth of saved-up slots.
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            window = granted[j] - start
            assert j - i + 1 <= window / limiter.interval + per_tick + 1, (i, j, window)
    assert granted[-1] - granted[0] >= (24 - 2 * per_tick) * limiter.interval


async def test_a_lone_waiter_waits_for_one_slot_not_a_tick():
    limiter = PriorityLimiter(RATE, min_tick=1.0)
    loop = asyncio.get_running_loop()
    await limiter.acquire()
    start = loop.time()
    await limiter.acquire()
    assert loop.time() - start < limiter.tick / 2  # a slot is 50 ms, a tick 1 s


@pytest.mark.parametrize("rate", [0, -5])
def test_a_rate_must_be_positive(rate):
    with pytest.raises(ValueError, match="positive"):
        PriorityLimiter(rate)
