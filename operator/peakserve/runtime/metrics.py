"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("peakserve_reconcile_total", "Reconciles of ModelDeployments, by result.", ["result"])
RECONCILE_ERRORS = Counter("peakserve_reconcile_errors_total",
                           "Reconciles that failed with an error and will be retried, by kind of error.", ["error"])
RECONCILE_SECONDS = Histogram("peakserve_reconcile_duration_seconds", "Time spent in one reconcile.",
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
MODEL_DEPLOYMENTS = Gauge("peakserve_modeldeployments", "ModelDeployments by their Ready condition status.",
                          ["ready"])

_ready_by_object: dict[str, str] = {}


def record_ready(key: str, ready: str | None) -> None:
    """Track each object's Ready status; None forgets the object (deleted)."""
    if ready is None:
        _ready_by_object.pop(key, None)
    else:
        _ready_by_object[key] = ready
    for state in ("True", "False", "Unknown"):
        MODEL_DEPLOYMENTS.labels(ready=state).set(sum(1 for v in _ready_by_object.values() if v == state))
