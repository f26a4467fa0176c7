"""The predictive floor: replicas for the request rate forecast for the next lead-time window. Pure.

From the Deployment's request-rate history (Prometheus, 5-minute steps), demand/forecast.py forecasts the peak of
[now, now + lead time + refresh); divided by the target requests/s per replica, that is a floor, never above
maxReplicas. The floor in force is the highest of spec minReplicas, the schedules' floor and this one, so it never
lowers a promotion's floor. It is made again every REFRESH_SECONDS (the plan wakes the operator for it); between
two forecasts status.autoscaling.predictive is memory, reused until it is STALE_SECONDS old, then dropped.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..api.spec import CAPACITY_METRICS, AutoscalingSpec, PredictiveStatus
from ..api.timestamps import parse_rfc3339, rfc3339
from ..demand.forecast import Series, backtest_mape, forecast_peak, predictive_floor
from .capacity_target import REFRESH_SECONDS, Signal, age_seconds, capacity_possible, due, number
from .range_result import RangeResult


STEP_SECONDS = 300                    # history resolution: rate over 5 minutes, every 5 minutes
STALE_SECONDS = 2 * REFRESH_SECONDS   # a floor not refreshed for this long is dropped


@dataclass(frozen=True)
class PredictiveDecision:
    status: PredictiveStatus | None
    floor: int                       # replicas the forecast holds up now; 0: none
    wake_at: dt.datetime | None      # the next forecast


def applies(autoscaling: AutoscalingSpec) -> bool:
    return autoscaling.predictive.enabled and autoscaling.metric in CAPACITY_METRICS


def forecast_due(autoscaling: AutoscalingSpec, previous: dict[str, Any], now: dt.datetime) -> bool:
    """Read the history: the floor applies, a capacity is or may become known, and the last forecast is old.
    `previous`: status.autoscaling."""
    return (applies(autoscaling) and capacity_possible(autoscaling, previous.get("capacity"))
            and due((previous.get("predictive") or {}).get("evaluatedAt"), now))


def history_series(result: RangeResult, step: float = STEP_SECONDS) -> Series:
    """The (single) summed series as evenly spaced values from its first sample; None where one is missing."""
    samples = sorted((t, v) for _, values in result.series for t, v in values if math.isfinite(v))
    if not samples:
        return Series(0.0, step, ())
    start = samples[0][0]
    values: list[float | None] = [None] * (int(round((samples[-1][0] - start) / step)) + 1)
    for t, v in samples:
        values[int(round((t - start) / step))] = v
    return Series(start, step, values)


def _parsed(previous: dict[str, Any]) -> PredictiveStatus | None:
    try:
        return PredictiveStatus.model_validate(previous)
    except ValueError:  # pydantic's ValidationError: a status we did not write
        return None


def _wake(evaluated_at: str | None, now: dt.datetime) -> dt.datetime | None:
    """The next forecast, when it is still ahead (a moment already past would only spin)."""
    if not evaluated_at:
        return None
    moment = parse_rfc3339(evaluated_at) + dt.timedelta(seconds=REFRESH_SECONDS)
    return moment if moment > now else None


def decide_predictive(autoscaling: AutoscalingSpec, signal: Signal, metrics: Mapping[str, RangeResult],
                      previous: dict[str, Any] | None, lead_seconds: int, now: dt.datetime) -> PredictiveDecision:
    """`previous`: status.autoscaling.predictive; `metrics`: what this pass read from Prometheus."""
    if not autoscaling.predictive.enabled:
        return PredictiveDecision(None, 0, None)
    if not applies(autoscaling):
        return PredictiveDecision(PredictiveStatus(
            message=f"metric {autoscaling.metric} is not proportional to load: the predictive floor "
                    "needs requestRate or concurrency"), 0, None)
    prev = previous or {}
    read = metrics.get("request_history")
    if signal.rate_per_replica is None:
        evaluated = rfc3339(now) if read is not None else prev.get("evaluatedAt")
        return PredictiveDecision(PredictiveStatus(
            floor=0, evaluated_at=evaluated,
            message="one replica's capacity is unknown (status.autoscaling.capacity): no predictive floor"), 0, None)
    if read is None:  # not due this pass: the last forecast is memory, until it is stale
        age = age_seconds(prev.get("evaluatedAt"), now)
        kept = _parsed(prev)
        if age is None or kept is None:
            return PredictiveDecision(PredictiveStatus(floor=0, message="no forecast yet"), 0, None)
        if age >= STALE_SECONDS:
            return PredictiveDecision(kept.model_copy(update={
                "floor": 0,
                "message": f"the forecast of {prev['evaluatedAt']} is stale (over {STALE_SECONDS} s): floor dropped"}),
                0, None)
        return PredictiveDecision(kept, int(kept.floor or 0), _wake(prev.get("evaluatedAt"), now))
    evaluated = rfc3339(now)
    window = lead_seconds + REFRESH_SECONDS
    if read.error:
        return PredictiveDecision(PredictiveStatus(
            floor=0, window_seconds=window, evaluated_at=evaluated,
            message=f"Prometheus at {autoscaling.prometheus_address}: {read.error}: no predictive floor"),
            0, _wake(evaluated, now))
    series = history_series(read)
    at = now.timestamp()
    min_history = autoscaling.predictive.min_history_hours * 3600.0
    made = forecast_peak(series, at, window, min_history_s=min_history)
    floor = predictive_floor(made.peak, signal.rate_per_replica, autoscaling.max_replicas)
    mape = backtest_mape(series, at, window, min_history_s=min_history) if made.peak is not None else None
    message = made.message
    if made.peak is not None:
        message += f": floor {floor} at {number(signal.rate_per_replica)} requests/s per replica"
        if floor == autoscaling.max_replicas and made.peak > floor * signal.rate_per_replica:
            message += " (capped at maxReplicas)"
    status = PredictiveStatus(
        floor=floor, forecast_requests_per_second=round(made.peak, 3) if made.peak is not None else None,
        window_seconds=window, history_hours=round(made.history_s / 3600, 1),
        mape_percent=round(mape, 1) if mape is not None else None, evaluated_at=evaluated, message=message)
    return PredictiveDecision(status, floor, _wake(evaluated, now))
