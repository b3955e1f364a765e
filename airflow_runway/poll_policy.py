"""When to poll a prediction whose typical duration is known: early checks, sparse mid-run, dense near the finish.

A fixed poller pays one request per gap for the whole render, though a video almost never finishes in its first
half. :class:`FinishAwareSchedule` spends its requests where the news is:

* **early** (the first ``early_window`` seconds, plus one refresh quantum): a poll every ``early_interval``
  seconds, so a prediction rejected or failed in its first minute is noticed within about ``early_interval``;
* **mid-run**: evenly spaced polls at most ``max_interval`` apart, the last one landing where the finish window
  opens (a mid-run failure is still seen within ``max_interval``);
* **finish window** (``expected_duration * (1 +- spread)``): a poll every ``dense_interval`` seconds, near the
  API's ~5 s status refresh quantum (polling faster buys nothing);
* **overdue**: the gap grows with how late the prediction is (``overdue_factor`` of the overdue time), from
  ``dense_interval`` up to ``max_interval``.

Whatever the phase, a gap is never below ``quantum`` and never sooner than a server's ``Retry-After``.
:meth:`FinishAwareSchedule.urgency` is the chance that the poll about to be made finds the prediction finished;
the shared request budget (:class:`~airflow_runway.hooks.session.PriorityLimiter`) serves the most urgent poll
first, so under a full budget the polls that are likely to find a finished video are not queued behind
mid-run checks.

Every constructor argument is a plain number, so a trigger can serialize them; ``clock`` is for simulations.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: The API refreshes a prediction's status about every 5 s: two polls closer than this learn nothing new.
API_REFRESH_QUANTUM = 5.0
#: The share of predictions assumed to fail early (rejected input, moderation), for :meth:`urgency` only.
EARLY_FAILURE_SHARE = 0.05


@dataclass(frozen=True)
class DurationPrior:
    """How long a model's predictions take: most finish within ``expected * (1 +- spread)`` seconds.

    :param expected: the typical duration, in seconds.
    :param spread: the relative half-width of the window most predictions finish in (``0.2`` = +-20%).
    """

    expected: float
    spread: float

    def __post_init__(self) -> None:
        if not self.expected > 0:
            raise ValueError(f"expected duration must be positive, got {self.expected!r}")
        if not 0 <= self.spread < 1:
            raise ValueError(f"spread must be in [0, 1), got {self.spread!r}")

    def refined(
        self, predict_times: Iterable[float], *, min_samples: int = 5, min_spread: float = 0.05
    ) -> DurationPrior:
        """This prior updated with the ``metrics.predict_time`` of earlier successful runs (most recent last).

        With fewer than ``min_samples`` positive samples the expected duration is a blend weighted by the sample
        count (the prior counts as ``min_samples``) and the spread stays the prior's; from ``min_samples`` on,
        the samples alone decide: their median, and the widest relative distance of one from it.
        """
        samples = [float(t) for t in predict_times if t is not None and math.isfinite(t) and t > 0]
        if not samples:
            return self
        if len(samples) < min_samples:
            weight = len(samples) / (len(samples) + min_samples)
            return DurationPrior(self.expected * (1 - weight) + statistics.fmean(samples) * weight, self.spread)
        median = statistics.median(samples)
        spread = max(abs(t - median) for t in samples) / median
        return DurationPrior(median, min(max(spread, min_spread), 0.9))


#: Built-in priors per Eachlabs model. Runway: the API documents ~833 s for a video; the spread is what we see.
MODEL_PRIORS: dict[str, DurationPrior] = {
    "runway": DurationPrior(expected=833.0, spread=0.2),
}


def prior_for(model: str | None, predict_times: Iterable[float] = ()) -> DurationPrior | None:
    """The duration prior of ``model`` refined by earlier runs' ``predict_time``; ``None`` when nothing is known.

    A model without a built-in prior starts from the samples' mean with a wide (+-50%) spread.
    """
    times = [float(t) for t in predict_times if t is not None and math.isfinite(t) and t > 0]
    prior = MODEL_PRIORS.get(model or "")
    if prior is None:
        if not times:
            return None
        prior = DurationPrior(statistics.fmean(times), 0.5)
    return prior.refined(times)


class FinishAwareSchedule:
    """Delays between status requests, dense only where a prediction is likely to finish (see the module doc).

    :meth:`next_delay` is called by :class:`~airflow_runway.polling.PredictionWatch` after each
    status read that found the prediction still running.

    :param started_at: when the prediction was created (Unix seconds): the phases are measured from it, so a
        trigger resumed after a triggerer restart picks up where it was.
    :param expected_duration: the typical duration in seconds (see :func:`prior_for`); ``None`` when unknown:
        then no finish window, the gap grows from ``dense_interval`` toward ``max_interval`` after the early
        phase, like a plain back-off.
    :param spread: the finish window's relative half-width.
    :param dense_interval: the gap inside the finish window.
    :param max_interval: the largest gap, mid-run and when overdue.
    :param early_interval: the gap during the early phase.
    :param early_window: how long (seconds from creation) the early phase lasts.
    :param overdue_factor: past the window, the gap is this fraction of how late the prediction is.
    :param quantum: no gap is shorter (the API's status refresh period).
    :param clock: the time source (Unix seconds); simulations pass a virtual one.
    """

    def __init__(
        self,
        *,
        started_at: float,
        expected_duration: float | None,
        spread: float = 0.2,
        dense_interval: float = API_REFRESH_QUANTUM,
        max_interval: float = 120.0,
        early_interval: float = 20.0,
        early_window: float = 60.0,
        overdue_factor: float = 0.1,
        quantum: float = API_REFRESH_QUANTUM,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if expected_duration is not None and expected_duration <= 0:
            raise ValueError(f"expected_duration must be positive, got {expected_duration!r}")
        if not 0 <= spread < 1:
            raise ValueError(f"spread must be in [0, 1), got {spread!r}")
        if quantum <= 0 or min(dense_interval, early_interval, max_interval) < quantum:
            raise ValueError("quantum must be positive and no interval may be shorter than it")
        self.started_at = float(started_at)
        self.expected_duration = expected_duration
        self.spread = spread
        self.dense_interval = float(dense_interval)
        self.max_interval = max(float(max_interval), self.dense_interval)
        self.early_interval = float(early_interval)
        self.early_window = float(early_window)
        self.overdue_factor = overdue_factor
        self.quantum = float(quantum)
        self.clock = clock
        self._last_poll: float | None = None

    @property
    def window(self) -> tuple[float, float] | None:
        """The finish window ``(opens, closes)`` in seconds after creation, or ``None`` when unknown."""
        if self.expected_duration is None:
            return None
        return self.expected_duration * (1 - self.spread), self.expected_duration * (1 + self.spread)

    def elapsed(self) -> float:
        """Seconds since the prediction was created."""
        return max(0.0, self.clock() - self.started_at)

    def next_delay(self, retry_after: float | None = None) -> float:
        """Return the gap before the next poll (called right after a poll found the prediction running)."""
        elapsed = self.elapsed()
        self._last_poll = elapsed
        delay = max(self._gap(elapsed), self.quantum)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        return delay

    def _gap(self, elapsed: float) -> float:
        # A failure at the very end of the early window only shows at the next status refresh: cover that too.
        if elapsed < self.early_window + self.quantum:
            return self.early_interval
        window = self.window
        if window is None:
            # Unknown duration: back off from the dense gap toward the cap as the wait grows.
            return min(self.max_interval, max(self.dense_interval, self.overdue_factor * elapsed))
        opens, closes = window
        if elapsed < opens:
            # Evenly spaced sparse polls, the last landing where the window opens.
            remaining = opens - elapsed
            return remaining / math.ceil(remaining / self.max_interval)
        if elapsed <= closes:
            return self.dense_interval
        return min(self.max_interval, max(self.dense_interval, self.overdue_factor * (elapsed - closes)))

    def urgency(self) -> float:
        """The chance (0..1) that a poll made now finds the prediction finished, given the last poll did not.

        Finishes are taken as uniform over the finish window (an unknown or overdue prediction scores 1, the
        most urgent), plus a small chance of an early failure spread over the early phase. The request budget
        serves the highest urgency first.
        """
        now = self.elapsed()
        last = self._last_poll if self._last_poll is not None else 0.0
        window = self.window
        if window is None:
            return 1.0
        survive_last, survive_now = self._survival(last, window), self._survival(now, window)
        if survive_last <= 0:
            return 1.0
        return min(1.0, max(0.0, (survive_last - survive_now) / survive_last))

    def _survival(self, elapsed: float, window: tuple[float, float]) -> float:
        """P(still running at ``elapsed``) under the uniform-window model with early failures."""
        early_failures = EARLY_FAILURE_SHARE
        failed = early_failures * min(1.0, elapsed / self.early_window) if self.early_window > 0 else early_failures
        opens, closes = window
        width = max(closes - opens, 1e-9)
        finished = (1 - early_failures) * min(1.0, max(0.0, (elapsed - opens) / width))
        return max(0.0, 1.0 - failed - finished)


#: The early phase's gap, as a multiple of a wait's ``poll_interval`` (20 s at the default 5 s).
EARLY_INTERVAL_FACTOR = 4.0
#: The operators' and the trigger's default ``poll_interval`` and ``max_poll_interval``, in seconds.
DEFAULT_POLL_INTERVAL = API_REFRESH_QUANTUM
DEFAULT_MAX_POLL_INTERVAL = 120.0
#: The finish window's relative half-width when a user gives the expected duration.
DEFAULT_SPREAD = 0.2


def schedule_for_wait(
    *,
    started_at: float,
    poll_interval: float,
    max_poll_interval: float,
    expected_duration: float | None,
    spread: float,
    clock: Callable[[], float] = time.time,
) -> FinishAwareSchedule:
    """The schedule of one wait (the trigger's, in the triggerer or in a worker), from the operators' parameters.

    ``poll_interval`` is the gap inside the finish window and the floor of every gap (the API's 5 s refresh
    quantum by default); the early checks come every ``4 * poll_interval``; ``max_poll_interval`` caps the gap.
    """
    return FinishAwareSchedule(
        started_at=started_at,
        expected_duration=expected_duration,
        spread=spread,
        dense_interval=poll_interval,
        max_interval=max(max_poll_interval, poll_interval),
        early_interval=EARLY_INTERVAL_FACTOR * poll_interval,
        quantum=poll_interval,
        clock=clock,
    )
