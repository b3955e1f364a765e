"""The finish-aware poll schedule: where it spends its requests, and its expected-duration priors."""

from __future__ import annotations

import itertools
import json

import pytest

from airflow_runway.poll_policy import (
    API_REFRESH_QUANTUM,
    MODEL_PRIORS,
    DurationPrior,
    FinishAwareSchedule,
    prior_for,
)


class Clock:
    """A settable time source (Unix seconds)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def poll_times(schedule: FinishAwareSchedule, clock: Clock, until: float) -> list[float]:
    """The elapsed times of the polls the trigger's loop makes (poll at once, then sleep ``next_delay``)."""
    start = clock.now
    times = []
    while clock.now - start <= until:
        times.append(clock.now - start)
        clock.now += schedule.next_delay()
    return times


def runway_schedule(clock: Clock, **kwargs) -> FinishAwareSchedule:
    return FinishAwareSchedule(started_at=clock.now, expected_duration=833.0, spread=0.2, clock=clock, **kwargs)


def test_first_minute_is_checked_often_enough_to_see_an_early_failure_within_30s():
    clock = Clock()
    times = poll_times(runway_schedule(clock), clock, until=200)
    assert times[1] <= 20  # the first check after the immediate one comes soon
    # A failure at any moment of the first minute shows at the next ~5 s refresh; a poll must follow within 30 s.
    for failed_at in [x / 2 for x in range(121)]:
        visible = failed_at + API_REFRESH_QUANTUM
        assert min(t for t in times if t >= visible) - failed_at <= 30, failed_at


def test_sparse_mid_run_then_dense_at_the_quantum_across_the_finish_window():
    clock = Clock()
    times = poll_times(runway_schedule(clock), clock, until=1000)
    gaps = {round(t, 6): round(b - t, 6) for t, b in itertools.pairwise(times)}
    mid = [gap for t, gap in gaps.items() if 90 <= t < 666.4 - 1e-6]
    dense = [gap for t, gap in gaps.items() if 666.4 <= t <= 999.6]
    assert mid and all(60 < gap <= 120 for gap in mid)
    assert any(abs(t - 666.4) < 1e-6 for t in times)  # the last sparse poll lands where the window opens
    assert dense and all(gap == API_REFRESH_QUANTUM for gap in dense)
    # A video finishing at the expected 833 s costs under a third of a fixed 6 s poller's 139 requests.
    assert len([t for t in times if t <= 833]) < 139 / 3


def test_no_gap_is_ever_shorter_than_the_refresh_quantum():
    for expected in (833.0, 30.0, None):
        clock = Clock()
        schedule = FinishAwareSchedule(
            started_at=clock.now, expected_duration=expected, spread=0.5, early_window=0, clock=clock
        )
        for _ in range(400):
            delay = schedule.next_delay()
            assert delay >= API_REFRESH_QUANTUM
            clock.now += 0.7  # the caller may come back at any time


def test_overdue_backs_off_gradually_up_to_the_cap():
    clock = Clock()
    schedule = runway_schedule(clock, max_interval=60)
    gaps = []
    for overdue in (1, 50, 100, 300, 3000):
        clock.now = schedule.started_at + 999.6 + overdue
        gaps.append(schedule.next_delay())
    assert gaps == sorted(gaps)
    assert gaps[0] == API_REFRESH_QUANTUM and gaps[2] == pytest.approx(10) and gaps[-1] == 60


def test_retry_after_is_a_floor_in_every_phase():
    clock = Clock()
    schedule = runway_schedule(clock)
    for elapsed in (0, 300, 800, 2000):
        clock.now = schedule.started_at + elapsed
        assert schedule.next_delay(retry_after=45) >= 45
        assert schedule.next_delay(retry_after=1) >= API_REFRESH_QUANTUM


def test_phases_follow_the_creation_time_after_a_triggerer_restart():
    clock = Clock()
    started = clock.now - 800  # a trigger rebuilt from its serialized kwargs, 800 s into the render
    kwargs = json.loads(json.dumps({"started_at": started, "expected_duration": 833.0, "spread": 0.2}))
    assert FinishAwareSchedule(**kwargs, clock=clock).next_delay() == API_REFRESH_QUANTUM


def test_urgency_is_highest_near_and_past_the_expected_finish():
    clock = Clock()
    schedule = runway_schedule(clock)

    def urgency_of_poll(last: float, now: float) -> float:
        clock.now = schedule.started_at + last
        schedule.next_delay()
        clock.now = schedule.started_at + now
        return schedule.urgency()

    mid_run = urgency_of_poll(300, 420)
    window_opens = urgency_of_poll(670, 675)
    window_closes = urgency_of_poll(990, 995)
    overdue = urgency_of_poll(1100, 1105)
    assert 0 <= mid_run < window_opens < window_closes <= overdue == 1.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="positive"):
        FinishAwareSchedule(started_at=0, expected_duration=0)
    with pytest.raises(ValueError, match="spread"):
        FinishAwareSchedule(started_at=0, expected_duration=10, spread=1.5)
    with pytest.raises(ValueError, match="quantum"):
        FinishAwareSchedule(started_at=0, expected_duration=10, dense_interval=1)


class TestPriors:
    def test_runway_has_a_built_in_prior_and_unknown_models_none(self):
        assert prior_for("runway") == MODEL_PRIORS["runway"] == DurationPrior(833.0, 0.2)
        assert prior_for("no-such-model") is None

    def test_history_refines_the_expected_duration_and_the_spread(self):
        history = [400.0, 420.0, 380.0, 410.0, 390.0]
        refined = prior_for("runway", history)
        assert refined is not None
        assert refined.expected == pytest.approx(400.0)
        assert refined.spread == pytest.approx(0.05)  # (420 - 400) / 400

    def test_a_few_samples_only_pull_the_prior_toward_them(self):
        refined = MODEL_PRIORS["runway"].refined([433.0])
        assert 433 < refined.expected < 833 and refined.spread == 0.2

    def test_a_model_without_prior_learns_from_its_history(self):
        refined = prior_for("ltx-video", [60.0, 80.0])
        assert refined is not None and refined.expected == pytest.approx(70.0) and refined.spread == 0.5

    def test_bad_samples_are_ignored(self):
        prior = MODEL_PRIORS["runway"]
        assert prior.refined([0.0, -3.0, float("nan")]) == prior
