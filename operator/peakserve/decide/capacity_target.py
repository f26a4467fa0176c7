"""The autoscaling signal in force: the metric, its per-pod target, and one replica's capacity. Pure.

requestRate (requests/s per pod) and concurrency (requests in flight per pod) aim at targetUtilization percent of
one replica's capacity. The capacity comes from spec.autoscaling.capacity; else from what was learned from
Prometheus (demand/capacity.py: the highest per-pod 5-minute rate whose mean latency met the SLO); else it is
unknown, and the autoscaler scales on queueTime at its default target until it is known.

status.autoscaling.capacity is memory: the highest capacity ever learned is kept (a lower bound that only rises),
because the busy windows it was learned from leave Prometheus' 24-hour look-back.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..api.spec import CAPACITY_METRICS, DEFAULT_TARGETS, AutoscalingSpec, CapacityStatus
from ..api.timestamps import parse_rfc3339, rfc3339
from ..demand.capacity import PodWindow, learn_capacity
from ..render.autoscaler import FALLBACK_METRIC, spec_capacity
from .range_result import RangeResult


REFRESH_SECONDS = 300   # capacity is learned, and the forecast made, at most this often
UNITS = {"queueTime": "us of queue time per request", "pendingRequests": "pending requests per pod",
         "gpuUtilization": "% GPU utilization"}


@dataclass(frozen=True)
class Signal:
    """What the autoscaler scales on now."""

    metric: str                          # the metric in force (queueTime while a capacity metric lacks capacity)
    target: float                        # its per-pod target, in its unit
    text: str                            # status.autoscaling.target
    capacity: CapacityStatus | None      # status.autoscaling.capacity (capacity metrics only)
    rate_per_replica: float | None       # the target in requests/s per replica (predictive floor); None: unknown


def number(value: float) -> str:
    """To the thousandth, no trailing zeros: 49.0 -> "49", 0.35 -> "0.35"."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def age_seconds(stamp: str | None, now: dt.datetime) -> float | None:
    if not stamp:
        return None
    try:
        return (now - parse_rfc3339(stamp)).total_seconds()
    except ValueError:
        return None


def due(stamp: str | None, now: dt.datetime) -> bool:
    """Whether something done at `stamp` is to be done again: never done, or REFRESH_SECONDS ago."""
    age = age_seconds(stamp, now)
    return age is None or age >= REFRESH_SECONDS


def spec_gives_capacity(autoscaling: AutoscalingSpec) -> bool:
    return autoscaling.capacity.requests_per_second is not None or autoscaling.capacity.concurrency is not None


def wants_capacity(autoscaling: AutoscalingSpec) -> bool:
    return autoscaling.metric in CAPACITY_METRICS


def learning_due(autoscaling: AutoscalingSpec, previous_capacity: dict[str, Any] | None, now: dt.datetime) -> bool:
    """Read the per-pod windows: a capacity metric, no capacity in the spec, learning on, and not read lately."""
    return (wants_capacity(autoscaling) and not spec_gives_capacity(autoscaling) and autoscaling.capacity.learn
            and due((previous_capacity or {}).get("learnedAt"), now))


def capacity_possible(autoscaling: AutoscalingSpec, previous_capacity: dict[str, Any] | None) -> bool:
    """A capacity is or may become known: from the spec, learned before, or learnable."""
    return (spec_gives_capacity(autoscaling) or autoscaling.capacity.learn
            or (previous_capacity or {}).get("source") == "learned")


def pod_windows(rate: RangeResult, in_flight: RangeResult) -> list[PodWindow]:
    """Per pod and 5-minute window: requests/s, requests in flight, and the mean latency that follows from the
    two by Little's law (in flight / rate, the same as busy µs / requests)."""
    flights = {(labels.get("pod"), t): v for labels, samples in in_flight.series for t, v in samples}
    windows = []
    for labels, samples in rate.series:
        for t, r in samples:
            c = flights.get((labels.get("pod"), t))
            if c is None or not (math.isfinite(r) and math.isfinite(c)) or r < 0 or c < 0:
                continue
            windows.append(PodWindow(r, c, c / r * 1000.0 if r > 0 else 0.0))
    return windows


def _fallback() -> str:
    return f"scaling on {FALLBACK_METRIC} at {DEFAULT_TARGETS[FALLBACK_METRIC]} us until it is known"


def capacity_status(autoscaling: AutoscalingSpec, metrics: Mapping[str, RangeResult],
                    previous_capacity: dict[str, Any] | None, now: dt.datetime) -> CapacityStatus | None:
    """One replica's capacity: the spec's; else the highest ever learned (learning anew when this pass read the
    windows); else unknown, with the reason. None for the metrics that need no capacity."""
    if not wants_capacity(autoscaling):
        return None
    cap = autoscaling.capacity
    slo = cap.slo_milliseconds
    if spec_gives_capacity(autoscaling):
        rate, in_flight = spec_capacity(cap, "requestRate"), spec_capacity(cap, "concurrency")
        return CapacityStatus(source="spec", requests_per_second=round(rate, 3), concurrency=round(in_flight, 3),
                              message="spec.autoscaling.capacity")
    prev = previous_capacity or {}
    kept = (prev.get("requestsPerSecond"), prev.get("concurrency")) if prev.get("source") == "learned" else None
    samples, within, learned_at, message = (prev.get("samples"), prev.get("withinSlo"), prev.get("learnedAt"),
                                            prev.get("message"))
    if not cap.learn and kept is None:
        message = f"spec.autoscaling.capacity is not set and capacity.learn is off: {_fallback()}"
    elif "pod_rate" in metrics:  # read this pass: learn
        learned_at = rfc3339(now)
        error = metrics["pod_rate"].error or (metrics.get("pod_in_flight") or metrics["pod_rate"]).error
        if error:
            message = f"Prometheus at {autoscaling.prometheus_address}: {error}"
        else:
            got = learn_capacity(pod_windows(metrics["pod_rate"], metrics["pod_in_flight"]), slo)
            samples, within, message = got.samples, got.within_slo, got.message
            if got.requests_per_second is not None and (kept is None or got.requests_per_second > kept[0]):
                kept = (round(got.requests_per_second, 3), round(got.concurrency or 0.0, 3) or None)
            elif got.requests_per_second is not None:
                message += f" ({number(got.requests_per_second)} requests/s); the higher one learned before is kept"
        if kept is None:
            message += f"; {_fallback()}"
        elif error or got.requests_per_second is None:
            message += "; the capacity learned before is kept"
    if kept is None:
        return CapacityStatus(source="unknown", samples=samples, within_slo=within, learned_at=learned_at,
                              message=message or f"not learned yet: {_fallback()}")
    rate, in_flight = kept
    return CapacityStatus(source="learned", requests_per_second=rate,
                          concurrency=in_flight if in_flight is not None else round(rate * slo / 1000, 3),
                          samples=samples, within_slo=within, learned_at=learned_at, message=message)


def resolve_signal(autoscaling: AutoscalingSpec, capacity: CapacityStatus | None) -> Signal:
    """The metric and target in force, from the spec and the capacity (capacity_status)."""
    metric = autoscaling.metric
    if metric not in CAPACITY_METRICS:
        target = autoscaling.target_value()
        text = f"{target}{UNITS[metric]}" if metric == "gpuUtilization" else f"{target} {UNITS[metric]}"
        return Signal(metric, target, text, None, None)
    if capacity is None or capacity.requests_per_second is None:
        target = DEFAULT_TARGETS[FALLBACK_METRIC]
        return Signal(FALLBACK_METRIC, target, f"{target} {UNITS[FALLBACK_METRIC]} (capacity unknown: fallback)",
                      capacity, None)
    share = autoscaling.target_utilization / 100
    rate_target = round(capacity.requests_per_second * share, 3)
    if metric == "requestRate":
        text = (f"{number(rate_target)} requests/s per pod ({autoscaling.target_utilization}% of "
                f"{number(capacity.requests_per_second)} requests/s)")
        return Signal(metric, rate_target, text, capacity, rate_target)
    in_flight = capacity.concurrency  # capacity_status derives it whenever the rate is known
    target = round(in_flight * share, 3)
    text = (f"{number(target)} requests in flight per pod ({autoscaling.target_utilization}% of "
            f"{number(in_flight)})")
    return Signal(metric, target, text, capacity, rate_target)
