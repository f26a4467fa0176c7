"""The HorizontalPodAutoscaler (autoscaling/v2) that scales Triton on its own load metrics.

Metric names are the per-pod custom metrics that the metrics adapter serves
(see README, "Autoscaling"); units are fixed here so they cannot drift.
"""

from __future__ import annotations

from typing import Any

from ..api.spec import SCALE_DOWN, SCALE_UP, AutoscalingSpec, ScalingRules
from . import names
from .owner import Owner

# metric -> (custom metric name, function from the spec's target to the HPA averageValue)
METRICS = {
    # Average queue time per request over the last window, microseconds.
    "queueTime": ("triton_queue_time_per_request_us", str),
    # Triton's nv_inference_pending_request_count gauge, requests per pod.
    "pendingRequests": ("nv_inference_pending_request_count", str),
    # Triton's nv_gpu_utilization gauge is 0..1; the spec's target is a percentage.
    "gpuUtilization": ("nv_gpu_utilization", lambda pct: f"{pct * 10}m"),
}


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


def render_hpa(owner: Owner, autoscaling: AutoscalingSpec, min_replicas: int | None = None) -> dict[str, Any]:
    """`min_replicas` is the floor in force now (a promotion schedule may raise it above the spec's)."""
    metric_name, to_value = METRICS[autoscaling.metric]
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
                "metric": {"name": metric_name},
                "target": {"type": "AverageValue", "averageValue": to_value(autoscaling.target)}}}],
            "behavior": behavior(autoscaling),
        },
    }
