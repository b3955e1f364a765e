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
import logging
import threading
from dataclasses import dataclass, field

import aiohttp
from aiolimiter import AsyncLimiter

log = logging.getLogger(__name__)

#: Most TCP connections one shared session opens (to the one API host).
POOL_SIZE = 10
#: Seconds an idle pooled connection is kept; triggers poll every 10-60 s, so keep it across a poll gap.
KEEPALIVE_SECONDS = 75.0

SessionKey = tuple[asyncio.AbstractEventLoop, str, str]


def make_limiter(rate_limit_per_minute: float) -> AsyncLimiter:
    """A budget of ``rate_limit_per_minute`` requests per minute, spread evenly.

    The bucket holds a single request, so requests are spaced ``60 / rate`` seconds apart: no 60-second
    window ever sees more than ``rate + 1`` requests, where a bucket as large as the rate would let twice the
    rate through in the first minute (a full burst, then the steady drain).
    """
    return AsyncLimiter(1, 60.0 / rate_limit_per_minute)


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
    :param limiter: the shared request budget; every request, retries included, acquires from it.
    :param refs: how many hooks hold a lease.
    """

    key: SessionKey
    session: aiohttp.ClientSession
    limiter: AsyncLimiter
    rate_limit_per_minute: float
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
