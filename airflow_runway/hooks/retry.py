"""The retry policy of every Eachlabs request, one object for the sync and the async path (tenacity's strategies).

Transient errors are retried with capped exponential backoff plus jitter, never sooner than a ``Retry-After``
the server sent. Reads and cancels retry every transient error. A create retries only when it provably created
nothing (connection never established, 429, 503): after a read timeout, a reset once the body was sent, a
500/502/504 or a malformed success body the prediction may exist, and a duplicate is a paid video.
Permanent errors are never retried. After the last attempt the last typed error is raised, not tenacity's
``RetryError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from airflow_runway.exceptions import (
    EachlabsConnectionError,
    EachlabsError,
    EachlabsRateLimitError,
    EachlabsServerError,
)

T = TypeVar("T")

#: A server error that states nothing was done, so a create may be sent again.
CREATE_RETRY_STATUSES = frozenset({503})
#: The longest a one-shot request may take: a final status read or a cancel at the deadline or on kill (the
#: triggerer gives a trigger's ``on_kill`` 30 s in all).
ONE_SHOT_TIMEOUT = 10.0
#: The shortest timeout an attempt gets, even right at its deadline.
MIN_ATTEMPT_TIMEOUT = 1.0


def is_retryable(error: BaseException, *, create: bool = False) -> bool:
    """Whether a request that failed with ``error`` may be sent again.

    :param create: the request creates a prediction (not idempotent).
    """
    if not isinstance(error, EachlabsError) or not error.transient:
        return False
    if not create:
        return True
    if isinstance(error, EachlabsConnectionError):
        return not error.request_sent
    if isinstance(error, EachlabsRateLimitError):
        return True
    return isinstance(error, EachlabsServerError) and error.http_status in CREATE_RETRY_STATUSES


def _failure(retry_state: tenacity.RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    return outcome.exception() if outcome is not None and outcome.failed else None


def _retry_after(retry_state: tenacity.RetryCallState) -> float | None:
    return getattr(_failure(retry_state), "retry_after", None)


class wait_retry_after(wait_base):
    """Wait ``max(Retry-After, backoff)``: the server's ``Retry-After`` is a floor the backoff cannot undercut.

    :param backoff: the strategy used when the server sent no ``Retry-After`` (and the floor's competitor).
    """

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = float(self.backoff(retry_state))
        retry_after = _retry_after(retry_state)
        return max(wait, retry_after) if retry_after is not None else wait


class stop_on_long_retry_after(stop_base):
    """Stop when the server asks for a wait longer than ``ceiling`` seconds.

    Sleeping that long inside one request would hold a worker slot or stall a trigger past its deadline; the
    error (with its ``retry_after``) goes to the caller, which can wait without blocking anything.
    """

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        retry_after = _retry_after(retry_state)
        return retry_after is not None and retry_after > self.ceiling


class stop_before_deadline(stop_base):
    """Stop when the next retry's wait would end past ``deadline`` (Unix seconds)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.time() + retry_state.upcoming_sleep >= self.deadline


@dataclass(frozen=True)
class RequestBounds:
    """How long one call (all its attempts) may take.

    :param deadline: absolute Unix time by which the call returns: every attempt's timeout and every retry's
        wait is cut to it (a wait for a prediction passes its own deadline here, so no ``Retry-After`` can hold
        a read past it).
    :param once: a single attempt with a timeout of at most :data:`ONE_SHOT_TIMEOUT` seconds.
    """

    deadline: float | None = None
    once: bool = False

    def timeout(self, configured: float) -> float:
        """The timeout of the next attempt, given the connection's ``configured`` one."""
        timeout = min(configured, ONE_SHOT_TIMEOUT) if self.once else configured
        if self.deadline is not None:
            timeout = min(timeout, max(self.deadline - time.time(), MIN_ATTEMPT_TIMEOUT))
        return timeout

    def policy(self, policy: EachlabsRetryPolicy) -> EachlabsRetryPolicy:
        """``policy`` as these bounds allow it."""
        return (
            dataclasses.replace(policy, max_attempts=1, deadline=None)
            if self.once
            else dataclasses.replace(policy, deadline=self.deadline)
        )


@dataclass(frozen=True)
class EachlabsRetryPolicy:
    """How many times, and how long apart, a request is tried.

    The wait before retry ``n`` (1-based) is ``min(wait_min * 2 ** (n - 1) + uniform(0, wait_min), wait_max)``,
    raised to the server's ``Retry-After`` when it sent one.

    :param max_attempts: attempts per request, the first included.
    :param wait_min: the first backoff, and the width of the random jitter added to every backoff (seconds).
    :param wait_max: the cap of the backoff (a ``Retry-After`` may exceed it).
    :param max_retry_after: a ``Retry-After`` longer than this (seconds) is not waited out: the error is raised.
    :param deadline: absolute Unix time: no retry whose wait would end past it (see :class:`RequestBounds`).
    :param sleep: how the sync path sleeps (tests pass a recorder).
    :param async_sleep: how the async path sleeps (tests pass a recorder).
    """

    max_attempts: int = 5
    wait_min: float = 1.0
    wait_max: float = 60.0
    max_retry_after: float = 300.0
    deadline: float | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    async_sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts!r}")
        if self.wait_min < 0 or self.wait_max < self.wait_min:
            raise ValueError(f"need 0 <= wait_min <= wait_max, got {self.wait_min!r} and {self.wait_max!r}")

    def wait(self) -> wait_base:
        """The wait strategy: capped exponential backoff with jitter, floored by ``Retry-After``."""
        return wait_retry_after(
            tenacity.wait_exponential_jitter(initial=self.wait_min, max=self.wait_max, jitter=self.wait_min)
        )

    def strategies(self, create: bool, description: str, logger: logging.Logger | Any) -> RetryStrategies:
        """tenacity's stop, wait, retry and before-sleep strategies of this policy, for one kind of request."""

        def log_retry(retry_state: tenacity.RetryCallState) -> None:
            wait = retry_state.next_action.sleep if retry_state.next_action is not None else 0.0
            logger.warning(
                "Eachlabs %s failed (attempt %d of %d): %s; retrying in %.2f s",
                description,
                retry_state.attempt_number,
                self.max_attempts,
                _failure(retry_state),
                wait,
            )

        stop = tenacity.stop_after_attempt(self.max_attempts) | stop_on_long_retry_after(self.max_retry_after)
        if self.deadline is not None:
            stop = stop | stop_before_deadline(self.deadline)
        return RetryStrategies(
            stop=stop,
            wait=self.wait(),
            retry=tenacity.retry_if_exception(lambda error: is_retryable(error, create=create)),
            before_sleep=log_retry,
        )

    def retrying(self, *, create: bool, description: str, logger: logging.Logger | Any) -> Retrying:
        """Runs one sync request under this policy: ``retrying(attempt)`` returns ``attempt()``'s result.

        :param create: the request creates a prediction (retried only when that provably did not happen).
        :param description: what the request is, for the retry log lines (e.g. ``"GET /v1/prediction/abc"``).
        :param logger: where retries are logged, at WARNING.
        """
        return Retrying(self, create, description, logger)

    def async_retrying(self, *, create: bool, description: str, logger: logging.Logger | Any) -> AsyncRetrying:
        """The async counterpart of :meth:`retrying`, with the same rules: ``await retrying(attempt)``."""
        return AsyncRetrying(self, create, description, logger)


@dataclass(frozen=True)
class RetryStrategies:
    """The tenacity strategies that decide, after a failed attempt, whether and when to try again."""

    stop: stop_base
    wait: wait_base
    retry: tenacity.retry_base
    before_sleep: Callable[[tenacity.RetryCallState], None]

    def after_failure(self, state: tenacity.RetryCallState, error: BaseException) -> float | None:
        """Record ``error`` as the outcome of the attempt ``state`` counts; the seconds to wait before the next
        one, or ``None`` when the error is to be raised (in tenacity's order: retry?, wait, stop?, log)."""
        state.outcome = tenacity.Future.construct(state.attempt_number, error, True)
        state.outcome_timestamp = time.monotonic()
        if not self.retry(state):
            return None
        state.upcoming_sleep = wait = float(self.wait(state))
        if self.stop(state):
            return None
        state.next_action = tenacity.RetryAction(wait)
        self.before_sleep(state)
        return wait


@dataclass(frozen=True)
class _Attempts:
    """One request's attempts under a policy, driven by a plain loop.

    tenacity's own ``Retrying`` runs its chain of actions around every call, a success included, and is built
    anew per request: together a quarter of a status poll's CPU in the triggerer benchmark. Here an attempt that
    succeeds costs a plain call; the policy's tenacity strategies are built and consulted only after a failure.
    """

    policy: EachlabsRetryPolicy
    create: bool
    description: str
    logger: logging.Logger | Any

    def _wait_after(
        self, state: tenacity.RetryCallState | None, error: BaseException
    ) -> tuple[tenacity.RetryCallState, float | None]:
        """The call state after the failed attempt ``error`` ended, and the wait before the next (``None``: raise)."""
        if state is None:
            state = tenacity.RetryCallState(retry_object=_STATE_OWNER, fn=None, args=(), kwargs={})
        else:
            state.prepare_for_next_attempt()
        strategies = self.policy.strategies(self.create, self.description, self.logger)
        return state, strategies.after_failure(state, error)


class Retrying(_Attempts):
    """The sync attempts of one request (see :meth:`EachlabsRetryPolicy.retrying`)."""

    def __call__(self, attempt: Callable[[], T]) -> T:
        state = None
        while True:
            try:
                return attempt()
            except Exception as error:
                state, wait = self._wait_after(state, error)
                if wait is None:
                    raise
            self.policy.sleep(wait)


class AsyncRetrying(_Attempts):
    """The async attempts of one request (see :meth:`EachlabsRetryPolicy.async_retrying`)."""

    async def __call__(self, attempt: Callable[[], Awaitable[T]]) -> T:
        state = None
        while True:
            try:
                return await attempt()
            except Exception as error:
                state, wait = self._wait_after(state, error)
                if wait is None:
                    raise
            await self.policy.async_sleep(wait)


#: The ``retry_object`` of the call states the strategies read (they never use it).
_STATE_OWNER = tenacity.Retrying()

#: No bounds beyond the policy's own: the default of a request.
UNBOUNDED = RequestBounds()
