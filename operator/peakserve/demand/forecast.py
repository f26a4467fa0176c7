"""A seasonal forecast of the next window's peak request rate, simple enough to explain in one line:

    the peak of the same window one day and one week ago, each scaled by how the last half hour
    compares with that day's same half hour; the median of those.

Seasonality of serving traffic is daily (people sleep) and weekly (weekends); the scaling by the recent level
carries growth and a day that runs hotter or colder than usual. The median of several seasons keeps a one-off
event (yesterday's flash sale) from being forecast again today. With less history than one day plus the window,
there is nothing to forecast from, and the forecast says so instead of guessing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

DAY = 86400.0
WEEK = 7 * DAY
SEASONS = (DAY, 2 * DAY, WEEK)   # yesterday, the day before, last week: those present are used
LEVEL_SECONDS = 1800.0           # the recent level: the last half hour


@dataclass(frozen=True)
class Series:
    """Evenly spaced request rates: values[i] at start + i * step (epoch seconds); None where missing."""

    start: float
    step: float
    values: Sequence[float | None]

    @property
    def end(self) -> float:
        """Just past the last sample."""
        return self.start + self.step * len(self.values)

    def between(self, t0: float, t1: float) -> list[float]:
        """The known values with t0 <= time < t1."""
        first = max(0, math.ceil((t0 - self.start) / self.step - 1e-9))
        last = min(len(self.values), math.ceil((t1 - self.start) / self.step - 1e-9))
        return [v for v in self.values[first:last] if v is not None]


@dataclass(frozen=True)
class Forecast:
    peak: float | None          # highest rate forecast for [now, now + window); None: no forecast
    history_s: float            # history available before now
    seasons: tuple[float, ...]  # the season offsets used (seconds)
    message: str


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def forecast_peak(series: Series, now: float, window_s: float, *, min_history_s: float = DAY + 7200.0,
                  level_s: float = LEVEL_SECONDS) -> Forecast:
    """The peak rate of [now, now + window_s), from samples before `now` only."""
    known = [i for i, v in enumerate(series.values) if v is not None and series.start + i * series.step < now]
    history = now - (series.start + known[0] * series.step) if known else 0.0
    if history < min_history_s:
        return Forecast(None, history, (), f"{history / 3600:.1f} h of request-rate history, "
                                           f"{min_history_s / 3600:g} h needed: no forecast yet")
    recent = _mean(series.between(now - level_s, now))
    estimates, used = [], []
    for season in SEASONS:
        if history < season + level_s:
            continue
        then_level = _mean(series.between(now - season - level_s, now - season))
        # A sample is the rate over the step before its time: the window's last step is labelled past its end.
        then_peak = series.between(now - season, now - season + window_s + series.step)
        if recent is None or then_level is None or not then_peak:
            continue
        scale = recent / then_level if then_level > 0 else 1.0
        estimates.append(scale * max(then_peak))
        used.append(season)
    if not estimates:
        return Forecast(None, history, (), "no complete season in the history (gaps): no forecast")
    peak = statistics.median(estimates)
    days = ", ".join(f"{s / DAY:g} d" for s in used)
    return Forecast(peak, history, tuple(used),
                    f"peak {peak:.1f} requests/s in the next {window_s / 60:g} min, from {days} ago "
                    f"scaled by the last {level_s / 60:g} min")


def backtest_mape(series: Series, now: float, window_s: float, *, span_s: float = DAY,
                  every_s: float = 3600.0, min_history_s: float = DAY + 7200.0) -> float | None:
    """Mean absolute percentage error (percent) of forecasts made every `every_s` over the last `span_s` before
    `now` against the peak that then happened; None when no forecast could be checked."""
    errors = []
    t = now - span_s
    while t + window_s <= now:
        actual = series.between(t, t + window_s)
        if actual and max(actual) > 0:
            made = forecast_peak(series, t, window_s, min_history_s=min_history_s)
            if made.peak is not None:
                errors.append(abs(made.peak - max(actual)) / max(actual))
        t += every_s
    return 100.0 * sum(errors) / len(errors) if errors else None


def predictive_floor(peak: float | None, per_replica: float, max_replicas: int) -> int:
    """Replicas for the forecast peak at `per_replica` requests/s each (the target), never above maxReplicas."""
    if peak is None or per_replica <= 0:
        return 0
    return min(max_replicas, math.ceil(peak / per_replica - 1e-9))
