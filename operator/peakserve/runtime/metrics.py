"""The operator's own Prometheus metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("peakserve_reconcile_total", "Reconciles of ModelDeployments, by result.", ["result"])
RECONCILE_ERRORS = Counter("peakserve_reconcile_errors_total",
                           "Reconciles that failed with an error and will be retried, by kind of error.", ["error"])
RECONCILE_SECONDS = Histogram("peakserve_reconcile_duration_seconds", "Time spent in one reconcile.",
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LEADER = Gauge("peakserve_leader", "1 on the replica that acts (it holds the leader Lease, or runs without "
               "election), 0 on a standby.")
# The work queue between watch events and passes (workqueue.py), as controller-runtime names its own.
WORKQUEUE_DEPTH = Gauge("peakserve_workqueue_depth", "ModelDeployments waiting for a pass, by priority "
                        "(refresh: child events, wake-ups, spec updates; first: creates, resume, drift).",
                        ["priority"])
WORKQUEUE_WAIT = Histogram("peakserve_workqueue_wait_seconds", "Time from a key's first add to the start of its pass.",
                           ["priority"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
WORKQUEUE_RETRIES = Counter("peakserve_workqueue_retries_total", "Passes that failed and were queued again.")
MODEL_DEPLOYMENTS = Gauge("peakserve_modeldeployments", "ModelDeployments by their Ready condition status.",
                          ["ready"])

_ready_by_object: dict[str, str] = {}
_ready_counts = {"True": 0, "False": 0, "Unknown": 0}
for _state in _ready_counts:
    MODEL_DEPLOYMENTS.labels(ready=_state).set(0)


def record_ready(key: str, ready: str | None) -> None:
    """Track each object's Ready status; None forgets the object (deleted). O(1) per pass: counts move."""
    old = _ready_by_object.pop(key, None) if ready is None else _ready_by_object.get(key)
    if ready is not None:
        _ready_by_object[key] = ready
    if old == ready:
        return
    for state, step in ((old, -1), (ready, 1)):
        if state in _ready_counts:
            _ready_counts[state] += step
            MODEL_DEPLOYMENTS.labels(ready=state).set(_ready_counts[state])


PROMOTION_READY = Gauge("peakserve_promotion_ready",
                        "1 when the next promotion's floor fits the free GPUs of its product, 0 when it does not "
                        "(PromotionReady); only while a schedule is inside its readiness horizon.",
                        ["namespace", "name", "schedule"])
PROMOTION_SHORTFALL = Gauge("peakserve_promotion_gpu_shortfall",
                            "GPUs the next promotion's floor needs beyond the free ones (0 when it fits).",
                            ["namespace", "name", "schedule"])

_promotion_by_object: dict[tuple[str, str], str] = {}


def record_promotion(namespace: str, name: str, promotion: dict | None) -> None:
    """Set the promotion gauges from status.autoscaling.promotion after a pass; None removes the object's series
    (no schedule inside its horizon, or the object is gone)."""
    key = (namespace, name)
    old = _promotion_by_object.pop(key, None)
    schedule = (promotion or {}).get("schedule")
    if old is not None and old != schedule:
        PROMOTION_READY.remove(namespace, name, old)
        PROMOTION_SHORTFALL.remove(namespace, name, old)
    if not schedule:
        return
    _promotion_by_object[key] = schedule
    shortfall = max(0, int(promotion.get("neededGpus") or 0) - int(promotion.get("freeGpus") or 0))
    PROMOTION_READY.labels(namespace=namespace, name=name, schedule=schedule).set(0 if shortfall else 1)
    PROMOTION_SHORTFALL.labels(namespace=namespace, name=name, schedule=schedule).set(shortfall)


# Per ModelDeployment, from status.autoscaling after each pass; a series goes away when its value is not known.
FORECAST_MAPE = Gauge("peakserve_forecast_mape_percent",
                      "Backtested mean absolute percentage error of the request-rate forecast over the last day.",
                      ["namespace", "name"])
PREDICTIVE_FLOOR = Gauge("peakserve_predictive_floor_replicas",
                         "Replicas the forecast asks for (0: no predictive floor).", ["namespace", "name"])
CAPACITY_RPS = Gauge("peakserve_capacity_requests_per_second",
                     "One replica's capacity at the latency SLO, requests/s (given in the spec or learned).",
                     ["namespace", "name"])


def record_autoscaling(namespace: str, name: str, autoscaling: Any | None) -> None:
    """Set the autoscaling gauges from status.autoscaling (an AutoscalingStatus); None forgets the object."""
    predictive = getattr(autoscaling, "predictive", None)
    capacity = getattr(autoscaling, "capacity", None)
    for gauge, value in ((FORECAST_MAPE, getattr(predictive, "mape_percent", None)),
                         (PREDICTIVE_FLOOR, getattr(predictive, "floor", None)),
                         (CAPACITY_RPS, getattr(capacity, "requests_per_second", None))):
        if value is not None:
            gauge.labels(namespace=namespace, name=name).set(value)
        else:
            try:
                gauge.remove(namespace, name)
            except KeyError:  # never set
                pass
