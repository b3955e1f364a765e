"""The retry policy: which faults are retried (and for create, which are not), the waits, the logs."""

from __future__ import annotations

import random

import pytest
import tenacity

from airflow_runway.exceptions import (
    EachlabsAuthError,
    EachlabsConnectionError,
    EachlabsError,
    EachlabsInvalidInputError,
    EachlabsMalformedResponseError,
    EachlabsNotFoundError,
    EachlabsPaymentRequiredError,
    EachlabsPredictionFailedError,
    EachlabsRateLimitError,
    EachlabsServerError,
)
from airflow_runway.hooks.retry import EachlabsRetryPolicy, is_retryable, stop_on_long_retry_after, wait_retry_after

REFUSED = EachlabsConnectionError("refused", request_sent=False)
RESET = EachlabsConnectionError("reset after the body was sent", request_sent=True)
READ_TIMEOUT = EachlabsConnectionError("read timed out")
MALFORMED = EachlabsMalformedResponseError("not json", status_code=200)


def server(status: int, retry_after: float | None = None) -> EachlabsServerError:
    return EachlabsServerError(f"HTTP {status}", status_code=status, retry_after=retry_after)


def limited(retry_after: float | None = None) -> EachlabsRateLimitError:
    return EachlabsRateLimitError("too many requests", status_code=429, retry_after=retry_after)


PERMANENT = [
    EachlabsInvalidInputError("bad", status_code=400),
    EachlabsAuthError("Invalid or missing API key", status_code=401),
    EachlabsPaymentRequiredError("payment required", status_code=402),
    EachlabsNotFoundError("Prediction not found", status_code=404),
    EachlabsPredictionFailedError("failed"),
]


@pytest.mark.parametrize(
    ("error", "on_read", "on_create"),
    [
        (REFUSED, True, True),
        (limited(), True, True),
        (limited(5), True, True),
        (server(503), True, True),
        (RESET, True, False),
        (READ_TIMEOUT, True, False),
        (server(500), True, False),
        (server(502), True, False),
        (server(504), True, False),
        (MALFORMED, True, False),
        *[(error, False, False) for error in PERMANENT],
        (ValueError("not ours"), False, False),
        (EachlabsError("base class, not transient"), False, False),
    ],
)
def test_what_is_retried(error, on_read, on_create):
    assert is_retryable(error) is on_read
    assert is_retryable(error, create=True) is on_create


def state_after(attempt: int, error: BaseException | None) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.outcome = tenacity.Future.construct(attempt, error, error is not None)
    return state


class TestWait:
    def test_exponential_backoff_with_bounded_jitter(self):
        wait = EachlabsRetryPolicy(wait_min=1.0, wait_max=60.0).wait()
        random.seed(7)
        for attempt in range(1, 6):
            base = 2.0 ** (attempt - 1)
            samples = [wait(state_after(attempt, server(500))) for _ in range(200)]
            assert all(base <= sample <= base + 1.0 for sample in samples), (attempt, min(samples), max(samples))
            assert max(samples) - min(samples) > 0.5  # the jitter actually spreads retries

    def test_backoff_is_capped(self):
        wait = EachlabsRetryPolicy(wait_min=1.0, wait_max=5.0).wait()
        assert all(wait(state_after(attempt, server(500))) <= 5.0 for attempt in range(1, 40))

    def test_retry_after_is_a_floor_above_the_cap(self):
        wait = EachlabsRetryPolicy(wait_min=0.01, wait_max=0.05).wait()
        assert wait(state_after(1, limited(retry_after=7))) == 7.0
        assert wait(state_after(1, server(503, retry_after=2))) == 2.0

    def test_backoff_wins_over_a_shorter_retry_after(self):
        wait = EachlabsRetryPolicy(wait_min=10.0, wait_max=60.0).wait()
        assert wait(state_after(1, limited(retry_after=1))) >= 10.0

    def test_zero_waits_for_tests(self):
        wait = EachlabsRetryPolicy(wait_min=0.0, wait_max=0.0).wait()
        assert wait(state_after(3, server(500))) == 0.0

    def test_wait_wrapper_passes_through_without_an_error(self):
        assert wait_retry_after(tenacity.wait_fixed(3))(state_after(1, None)) == 3.0

    def test_stop_on_a_retry_after_beyond_the_ceiling(self):
        stop = stop_on_long_retry_after(300)
        assert stop(state_after(1, limited(retry_after=301)))
        assert not stop(state_after(1, limited(retry_after=300)))
        assert not stop(state_after(1, server(500)))


class TestPolicyValidation:
    @pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"wait_min": -1}, {"wait_min": 2, "wait_max": 1}])
    def test_rejects_nonsense(self, kwargs):
        with pytest.raises(ValueError):
            EachlabsRetryPolicy(**kwargs)


class Script:
    """A request that fails with the given errors, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def acall(self) -> str:
        return self()


class RecordingLogger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, message: str, *args: object) -> None:
        self.lines.append(message % args)


def policy(sleeps: list[float], **kwargs) -> EachlabsRetryPolicy:
    async def async_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    kwargs.setdefault("wait_min", 0.5)
    kwargs.setdefault("wait_max", 4.0)
    return EachlabsRetryPolicy(sleep=sleeps.append, async_sleep=async_sleep, **kwargs)


class TestSyncRetrying:
    def test_transient_faults_are_retried_until_success(self):
        sleeps: list[float] = []
        script = Script(server(502), RESET, MALFORMED, limited())
        logger = RecordingLogger()
        result = policy(sleeps).retrying(create=False, description="GET /v1/prediction/x", logger=logger)(script)
        assert result == "ok"
        assert script.calls == 5
        assert len(sleeps) == 4
        assert len(logger.lines) == 4
        assert "GET /v1/prediction/x failed (attempt 1 of 5)" in logger.lines[0]
        assert "HTTP 502" in logger.lines[0] and "retrying in" in logger.lines[0]

    def test_the_last_typed_error_is_raised_not_retry_error(self):
        sleeps: list[float] = []
        script = Script(*[server(500)] * 10)
        with pytest.raises(EachlabsServerError):
            policy(sleeps, max_attempts=3).retrying(create=False, description="GET", logger=RecordingLogger())(script)
        assert script.calls == 3
        assert len(sleeps) == 2

    @pytest.mark.parametrize("error", PERMANENT)
    def test_permanent_errors_are_raised_at_once(self, error):
        sleeps: list[float] = []
        script = Script(error)
        with pytest.raises(type(error)):
            policy(sleeps).retrying(create=False, description="GET", logger=RecordingLogger())(script)
        assert script.calls == 1
        assert sleeps == []

    @pytest.mark.parametrize("error", [REFUSED, limited(), server(503)])
    def test_create_is_retried_when_nothing_was_created(self, error):
        sleeps: list[float] = []
        script = Script(error, error)
        retrying = policy(sleeps).retrying(create=True, description="POST /v1/prediction/", logger=RecordingLogger())
        assert retrying(script) == "ok"
        assert script.calls == 3

    @pytest.mark.parametrize("error", [RESET, READ_TIMEOUT, server(500), server(502), server(504), MALFORMED])
    def test_create_is_not_retried_when_it_may_have_created_something(self, error):
        sleeps: list[float] = []
        script = Script(error)
        retrying = policy(sleeps).retrying(create=True, description="POST /v1/prediction/", logger=RecordingLogger())
        with pytest.raises(type(error)):
            retrying(script)
        assert script.calls == 1
        assert sleeps == []

    def test_retry_after_is_honoured(self):
        sleeps: list[float] = []
        script = Script(limited(retry_after=3), server(503, retry_after=1.5))
        policy(sleeps, wait_min=0.01, wait_max=0.02).retrying(
            create=True, description="POST", logger=RecordingLogger()
        )(script)
        assert sleeps == [3.0, 1.5]

    def test_a_retry_after_beyond_the_ceiling_is_left_to_the_caller(self):
        sleeps: list[float] = []
        script = Script(limited(retry_after=3600))
        with pytest.raises(EachlabsRateLimitError) as caught:
            policy(sleeps).retrying(create=False, description="GET", logger=RecordingLogger())(script)
        assert caught.value.retry_after == 3600
        assert script.calls == 1 and sleeps == []


class TestAsyncRetrying:
    async def test_same_rules_as_sync(self):
        sleeps: list[float] = []
        script = Script(REFUSED, limited(retry_after=2), server(500))
        retrying = policy(sleeps).async_retrying(create=False, description="GET", logger=RecordingLogger())
        assert await retrying(script.acall) == "ok"
        assert script.calls == 4
        assert len(sleeps) == 3 and sleeps[1] == 2.0

    async def test_last_error_and_permanent(self):
        sleeps: list[float] = []
        script = Script(*[MALFORMED] * 5)
        with pytest.raises(EachlabsMalformedResponseError):
            await policy(sleeps, max_attempts=2).async_retrying(
                create=False, description="GET", logger=RecordingLogger()
            )(script.acall)
        assert script.calls == 2
        not_found = Script(PERMANENT[3])
        with pytest.raises(EachlabsNotFoundError):
            await policy(sleeps).async_retrying(create=False, description="GET", logger=RecordingLogger())(
                not_found.acall
            )
        assert not_found.calls == 1
