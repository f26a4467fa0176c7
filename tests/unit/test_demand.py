"""The seasonal forecast and the capacity learner (operator/peakserve/demand): pure functions on samples."""

from __future__ import annotations

import math

import pytest

from peakserve.demand.capacity import PodWindow, learn_capacity
from peakserve.demand.forecast import DAY, Series, backtest_mape, forecast_peak, predictive_floor

STEP = 300.0


def daily(days: float, level=lambda day: 1.0, spike_at_s: float | None = None) -> Series:
    """A daily sine between 50 and 150 requests/s (peak at 06:00), optionally a 3x spike for 20 min each day."""
    values = []
    for i in range(int(days * DAY / STEP)):
        t = (i + 1) * STEP  # a sample is the rate over the step before it
        rate = (100 + 50 * math.sin(2 * math.pi * t / DAY)) * level(t / DAY)
        if spike_at_s is not None and 0 <= (t % DAY) - spike_at_s < 1200:
            rate *= 3
        values.append(rate)
    return Series(0.0, STEP, values)


def test_too_little_history_forecasts_nothing_and_says_why():
    made = forecast_peak(daily(1.0), now=DAY, window_s=600)
    assert made.peak is None and "h needed: no forecast yet" in made.message
    assert predictive_floor(made.peak, 100.0, 10) == 0


def test_a_repeating_day_is_forecast_from_yesterday():
    series = daily(3)
    now = 2 * DAY + 0.25 * DAY - 600  # ten minutes before the daily peak at 06:00
    made = forecast_peak(series, now, window_s=1200)
    assert made.peak == pytest.approx(150.0, rel=0.01)
    assert made.seasons == (DAY, 2 * DAY)


def test_the_recent_level_scales_the_seasons():
    # Today runs 20% hotter than every earlier day: the forecast follows the last half hour.
    series = daily(3, level=lambda day: 1.2 if day >= 2 else 1.0)
    made = forecast_peak(series, 2 * DAY + 0.25 * DAY - 600, window_s=1200)
    assert made.peak == pytest.approx(180.0, rel=0.02)


def test_a_daily_spike_is_forecast_before_it_arrives():
    series = daily(8, spike_at_s=12 * 3600)
    made = forecast_peak(series, 7 * DAY + 12 * 3600 - 300, window_s=540)
    assert made.seasons == (DAY, 2 * DAY, 7 * DAY)
    assert made.peak == pytest.approx(3 * 100, rel=0.05)  # noon is the sine's mean, tripled
    assert backtest_mape(series, 7 * DAY, window_s=540) < 2.0


def test_a_one_off_event_yesterday_is_not_forecast_again():
    """The median of the seasons: yesterday's flash sale alone does not raise today's floor."""
    base = daily(8)
    values = list(base.values)
    for i in range(int((6 * DAY + 12 * 3600) / STEP), int((6 * DAY + 12 * 3600 + 1800) / STEP)):
        values[i] *= 5
    made = forecast_peak(Series(0.0, STEP, values), 7 * DAY + 12 * 3600 - 300, window_s=540)
    assert made.peak < 130


def test_the_floor_is_capped_at_max_replicas():
    assert predictive_floor(1000.0, 160.0, 20) == 7
    assert predictive_floor(1000.0, 10.0, 20) == 20
    assert predictive_floor(None, 160.0, 20) == 0


def test_capacity_is_the_highest_rate_within_the_slo():
    windows = [PodWindow(rate, rate * 0.03, 30 + rate / 4) for rate in range(10, 400, 20)]
    learned = learn_capacity(windows, slo_ms=100)
    assert learned.requests_per_second == 270  # 30 + 270/4 = 97.5 ms; 290 -> 102.5 ms
    assert learned.concurrency == pytest.approx(270 * 0.03)
    assert (learned.samples, learned.within_slo) == (20, 14)


def test_capacity_needs_enough_busy_windows():
    learned = learn_capacity([PodWindow(50, 1, 40)] * 3 + [PodWindow(0, 0, 0)] * 20, slo_ms=100)
    assert learned.requests_per_second is None and "3 busy pod windows" in learned.message
