"""One aiohttp session and one request budget per connection, event loop and process, shared by every hook.

A triggerer runs hundreds of triggers in one event loop. Each holds its own hook, yet all of one connection must
share one connection pool (few TCP connections, kept alive) and one ``rate_limit_per_minute`` budget, or the
API's rate limit is exceeded as soon as enough predictions are waited on. Hooks lease a
:class:`SharedSession` from :data:`SESSIONS` on first async use and release it in ``aclose()``; the last release
closes the session. Entries are keyed by the running loop, so a session never crosses event loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
from dataclasses import dataclass, field

import aiohttp

from airflow_runway.hooks.transport import environment_proxy

log = logging.getLogger(__name__)

#: Most TCP connections one shared session opens (to the one API host).
POOL_SIZE = 10
#: Seconds an idle pooled connection is kept; triggers poll every 10-60 s, so keep it across a poll gap.
KEEPALIVE_SECONDS = 75.0

#: The shortest gap between two wake-ups of waiting requests, in seconds (see :class:`PriorityLimiter`).
MIN_TICK = 0.25

SessionKey = tuple[asyncio.AbstractEventLoop, str, str]


class PriorityLimiter:
    """A request budget of ``rate_limit_per_minute`` requests per minute, spread evenly, most urgent served first.

    A slot frees every ``interval = 60 / rate`` seconds, and free slots are not saved up beyond one ``tick``
    (``max(interval, MIN_TICK)``): at the API's 60/min budget requests are spaced one second apart (a bucket
    holding a single request), so no 60-second window ever sees more than ``rate + 1`` requests, where a bucket
    as large as the rate would let twice the rate through in the first minute (a full burst, then the steady
    drain). A budget with slots closer together than ``MIN_TICK`` wakes its waiters a tick's worth at a time
    (a window then sees at most ``rate + tick / interval``): one wake-up per request cost five times the CPU of
    the request itself. When requests wait, each free slot goes to the waiter with the highest ``urgency``;
    equal urgencies are served first come, first served, so callers that never pass one get a plain FIFO budget.
    It works on the running loop's clock (``loop.time()``), so it runs unchanged on a simulated clock.

    :param rate_limit_per_minute: requests per minute.
    :param min_tick: the shortest gap between two wake-ups of waiters, in seconds.
    """

    def __init__(self, rate_limit_per_minute: float, min_tick: float = MIN_TICK) -> None:
        if not rate_limit_per_minute > 0:
            raise ValueError(f"rate_limit_per_minute must be positive, got {rate_limit_per_minute!r}")
        self.rate_limit_per_minute = float(rate_limit_per_minute)
        #: Seconds between two granted requests.
        self.interval = 60.0 / self.rate_limit_per_minute
        #: Seconds of free slots that may be saved up, and the shortest gap between two wake-ups of waiters.
        self.tick = max(self.interval, min_tick)
        #: When the next slot frees; ``None`` before the first request.
        self._next_free: float | None = None
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """How many requests are queued for a slot."""
        return sum(1 for *_, future in self._waiters if not future.done())

    def try_acquire(self) -> bool:
        """Take a slot if one is free now and nobody waits for it; never waits (the common case, without a task)."""
        now = asyncio.get_running_loop().time()
        # No timer armed means no one is waiting (the last grant disarms it): then a free slot is taken at once.
        if self._timer is None and (self._next_free is None or now >= self._next_free):
            self._next_free = self._saved_up(now) + self.interval
            return True
        return False

    def _saved_up(self, now: float) -> float:
        """When the oldest slot still free at ``now`` freed: at most one tick's worth of slots is kept."""
        return now if self._next_free is None else max(self._next_free, now - self.tick + self.interval)

    async def acquire(self, urgency: float = 0.0, timeout: float | None = None) -> None:
        """Wait for a slot; among waiters the highest ``urgency`` goes first (ties: first come, first served).

        :param timeout: give up after this many seconds with :class:`asyncio.TimeoutError` (the slot is not taken).
        """
        if self.try_acquire():
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (-urgency, next(self._order), future))
        self._arm(loop)
        # A timer on the waiter's own future rather than asyncio.wait_for, which wraps every queued request in a
        # task of its own. A waiter that times out or is cancelled before its turn is skipped; one cancelled after
        # it was granted lost its slot.
        expiry = None if timeout is None else loop.call_later(timeout, _expire, future)
        try:
            await future
        finally:
            if expiry is not None:
                expiry.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            now = loop.time()
            # Wake when there is a slot for every waiter, or a tick's worth of slots (one at the API's budget).
            wanted = min(len(self._waiters), round(self.tick / self.interval))
            when = now if self._next_free is None else max(self._next_free + (wanted - 1) * self.interval, now)
            self._timer = loop.call_at(when, self._grant, loop, when)

    def _grant(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer = None
        now = loop.time()
        # Slots saved up as of when the timer was due: a timer that fires late forfeits none of them.
        next_free = self._saved_up(min(when, now))
        while self._waiters and next_free <= now:
            *_, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                next_free += self.interval
        self._next_free = next_free
        if self._waiters:
            self._arm(loop)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


def make_limiter(rate_limit_per_minute: float) -> PriorityLimiter:
    """The shared request budget of one connection: ``rate_limit_per_minute`` requests per minute."""
    return PriorityLimiter(rate_limit_per_minute)


def make_session() -> aiohttp.ClientSession:
    """The pooled, keep-alive session (call from inside the running loop that will use it).

    ``trust_env`` is off because it also reads ``~/.netrc``; the hook passes each request the environment's proxy
    instead (see :mod:`airflow_runway.hooks.transport`).
    """
    connector = aiohttp.TCPConnector(limit=POOL_SIZE, limit_per_host=POOL_SIZE, keepalive_timeout=KEEPALIVE_SECONDS)
    session = aiohttp.ClientSession(connector=connector, trust_env=False)
    # aiohttp >= 3.10 silently resends a GET once after a reset; that request would bypass the rate budget and
    # the retry policy's count and log. Switched off the way aiohttp's own test client does.
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


@dataclass(eq=False)
class SharedSession:
    """A lease-counted session and rate budget of one connection in one event loop.

    :param key: ``(loop, conn_id, base_url)``.
    :param session: the shared aiohttp session (one connector, one pool).
    :param limiter: the shared request budget; every request, retries included, acquires from it (a status poll
        with its schedule's urgency).
    :param proxy: the proxy the environment names for the base URL, read once when the session opens (reading it
        per request cost a quarter of a status poll's CPU in the triggerer benchmark).
    :param refs: how many hooks hold a lease.
    """

    key: SessionKey
    session: aiohttp.ClientSession
    limiter: PriorityLimiter
    rate_limit_per_minute: float
    proxy: str | None = None
    refs: int = field(default=0)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the session belongs to."""
        return self.key[0]


class SessionRegistry:
    """Lease-counted :class:`SharedSession` objects keyed by (running loop, connection id, base URL).

    Safe to use from several threads, each running its own loop; within one loop leasing never awaits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[SessionKey, SharedSession] = {}

    def lease(self, conn_id: str, base_url: str, rate_limit_per_minute: float) -> SharedSession:
        """Take a lease on the running loop's session for this connection, creating it if needed.

        The budget is set by whoever creates the entry: a hook that sees another rate for the same connection
        shares the existing budget.
        """
        loop = asyncio.get_running_loop()
        key: SessionKey = (loop, conn_id, base_url)
        with self._lock:
            self._forget_closed_loops()
            entry = self._entries.get(key)
            if entry is None or entry.session.closed:
                entry = SharedSession(
                    key=key,
                    session=make_session(),
                    limiter=make_limiter(rate_limit_per_minute),
                    rate_limit_per_minute=rate_limit_per_minute,
                    proxy=environment_proxy(base_url),
                )
                self._entries[key] = entry
                log.debug("Opened the shared Eachlabs session of %r (%s)", conn_id, base_url)
            elif entry.rate_limit_per_minute != rate_limit_per_minute:
                log.debug(
                    "Eachlabs connection %r already shares a budget of %g requests/min; not %g",
                    conn_id,
                    entry.rate_limit_per_minute,
                    rate_limit_per_minute,
                )
            entry.refs += 1
            return entry

    def _drop(self, entry: SharedSession) -> bool:
        """Give back one lease; ``True`` when it was the last (the entry is then forgotten)."""
        with self._lock:
            entry.refs = max(0, entry.refs - 1)
            if entry.refs:
                return False
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            return True

    async def release(self, entry: SharedSession) -> None:
        """Give back a lease; the last one closes the session."""
        if not self._drop(entry):
            return
        if entry.loop is asyncio.get_running_loop():
            await entry.session.close()
        else:
            self._close_elsewhere(entry)
        log.debug("Closed the shared Eachlabs session of %r", entry.key[1])

    def release_nowait(self, entry: SharedSession) -> None:
        """Give back a lease taken in another event loop than the running one (no await needed).

        The last lease closes the session in its own loop when that loop still runs; when it has closed, the
        session is simply forgotten (its sockets went with the loop).
        """
        if self._drop(entry):
            self._close_elsewhere(entry)

    @staticmethod
    def _close_elsewhere(entry: SharedSession) -> None:
        if entry.loop.is_running() and not entry.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                asyncio.run_coroutine_threadsafe(entry.session.close(), entry.loop)

    def _forget_closed_loops(self) -> None:
        for key in [key for key in self._entries if key[0].is_closed()]:
            del self._entries[key]

    def leases(self) -> dict[tuple[str, str], int]:
        """The running loop's open entries: ``{(conn_id, base_url): lease count}`` (for tests and debugging)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            return {(key[1], key[2]): entry.refs for key, entry in self._entries.items() if key[0] is loop}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


#: The process-wide registry every :class:`~airflow_runway.hooks.eachlabs.EachlabsHook` leases from.
SESSIONS = SessionRegistry()
