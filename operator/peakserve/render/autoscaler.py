"""The HorizontalPodAutoscaler (autoscaling/v2) that scales Triton on its own load metrics.

Metric names are the per-pod custom metrics that the metrics adapter serves
(see README, "Autoscaling"); units are fixed here so they cannot drift.
"""

from __future__ import annotations

from typing import Any

from ..api.spec import CAPACITY_METRICS, DEFAULT_TARGETS, SCALE_DOWN, SCALE_UP, AutoscalingSpec, Capacity, ScalingRules
from . import names
from .owner import Owner

# While no capacity is known, a capacity metric falls back to queue time at its default target.
FALLBACK_METRIC = "queueTime"


def _milli(value: float) -> str:
    """A fractional per-pod value as a Kubernetes quantity in milli-units: 49 requests/s is "49000m"."""
    return f"{round(value * 1000)}m"


# metric -> (custom metric name, function from the target in force to the HPA averageValue)
METRICS = {
    # Requests/s served per pod: rate of Triton's nv_inference_request_success counter.
    "requestRate": ("triton_request_rate", _milli),
    # Requests in flight per pod (queued plus executing): rate of nv_inference_request_duration_us / 1e6.
    "concurrency": ("triton_requests_in_flight", _milli),
    # Average queue time per request over the last window, microseconds.
    "queueTime": ("triton_queue_time_per_request_us", str),
    # Triton's nv_inference_pending_request_count gauge, requests per pod.
    "pendingRequests": ("nv_inference_pending_request_count", str),
    # Triton's nv_gpu_utilization gauge is 0..1; the spec's target is a percentage.
    "gpuUtilization": ("nv_gpu_utilization", lambda pct: f"{pct * 10}m"),
}


def spec_capacity(capacity: Capacity, metric: str) -> float | None:
    """One replica's capacity in the metric's unit as the spec gives it (requests/s, or requests in flight),
    either figure derived from the other by Little's law (in flight = rate x sloMilliseconds / 1000)."""
    rate, in_flight = capacity.requests_per_second, capacity.concurrency
    if metric == "requestRate":
        return rate if rate is not None else (in_flight * 1000 / capacity.slo_milliseconds if in_flight else None)
    return in_flight if in_flight is not None else (rate * capacity.slo_milliseconds / 1000 if rate else None)


def signal(autoscaling: AutoscalingSpec, metric: str | None = None,
           target: float | None = None) -> tuple[str, float]:
    """The metric in force and its per-pod target: the operator's decision when given (ScalingPlan), else
    from the spec alone (offline rendering): a capacity metric aims at targetUtilization of spec.capacity,
    and falls back to queueTime at its default target while no capacity is known."""
    if metric is not None and target is not None:
        return metric, target
    wanted = autoscaling.metric
    if wanted not in CAPACITY_METRICS:
        return wanted, autoscaling.target_value()
    capacity = spec_capacity(autoscaling.capacity, wanted)
    if capacity is None:
        return FALLBACK_METRIC, DEFAULT_TARGETS[FALLBACK_METRIC]
    return wanted, capacity * autoscaling.target_utilization / 100


def _rules(rules: ScalingRules, defaults: ScalingRules, select: str) -> dict[str, Any]:
    r = rules.with_defaults(defaults)
    return {
        "stabilizationWindowSeconds": r.stabilization_window_seconds,
        "selectPolicy": select,
        "policies": [
            {"type": "Pods", "value": r.max_pods, "periodSeconds": r.period_seconds},
            {"type": "Percent", "value": r.max_percent, "periodSeconds": r.period_seconds},
        ],
    }


def behavior(autoscaling: AutoscalingSpec) -> dict[str, Any]:
    # Up: the faster policy wins. Down: the gentler one, because GPU pods are slow to return.
    return {"scaleUp": _rules(autoscaling.scale_up, SCALE_UP, "Max"),
            "scaleDown": _rules(autoscaling.scale_down, SCALE_DOWN, "Min")}


def render_hpa(owner: Owner, autoscaling: AutoscalingSpec, min_replicas: int | None = None,
               metric: str | None = None, target: float | None = None) -> dict[str, Any]:
    """`min_replicas` is the floor in force now (a promotion schedule may raise it above the spec's);
    `metric` and `target` the signal in force (see `signal`)."""
    metric, target = signal(autoscaling, metric, target)
    custom_metric, to_value = METRICS[metric]
    value = target if metric in CAPACITY_METRICS else int(target)
    child = names.child_name(owner.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": owner.metadata(child),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": child},
            "minReplicas": min_replicas or autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": custom_metric},
                "target": {"type": "AverageValue", "averageValue": to_value(value)}}}],
            "behavior": behavior(autoscaling),
        },
    }
