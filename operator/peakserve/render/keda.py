"""The KEDA ScaledObject: Prometheus triggers on Triton's metrics, and cron triggers for promotions.

KEDA owns the HPA it creates (keda-hpa-<name>); peakserve's own HPA is then pruned, so exactly one
autoscaler acts on the Deployment. A cron trigger is a floor: the Prometheus trigger still scales above it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..api.spec import AutoscalingSpec
from ..api import schedules
from . import names
from .autoscaler import behavior, signal
from .owner import Owner

POLLING_SECONDS = 10  # KEDA's default is 30 s: too slow for a promotion minute


def _selector(owner: Owner) -> str:
    # Deployment pods are named <deployment>-<replicaset hash>-<pod hash>.
    return f'namespace="{owner.namespace}",pod=~"{names.child_name(owner.name)}-[a-z0-9]+-[a-z0-9]+"'


def _decimal(value: float) -> str:
    """A threshold to the milli-unit, as the HPA's quantity would be: 49.0 -> "49", 12.3456 -> "12.346"."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def prometheus_trigger(owner: Owner, autoscaling: AutoscalingSpec, metric: str | None = None,
                       target: float | None = None) -> dict[str, Any]:
    """(query, threshold, metricType): the same units as the HPA's per-pod metrics. `metric` and `target`:
    the signal in force (see autoscaler.signal)."""
    sel = _selector(owner)
    metric, target = signal(autoscaling, metric, target)
    if metric == "requestRate":
        # Deployment-wide requests/s; AverageValue: KEDA divides by the replicas, so the threshold is per pod.
        query = f"sum(rate(nv_inference_request_success{{{sel}}}[30s]))"
        threshold, metric_type = _decimal(target), "AverageValue"
    elif metric == "concurrency":
        # Deployment-wide requests in flight (Little's law: busy µs per second / 1e6), divided by the replicas.
        query = f"sum(rate(nv_inference_request_duration_us{{{sel}}}[30s])) / 1e6"
        threshold, metric_type = _decimal(target), "AverageValue"
    elif metric == "queueTime":
        # Deployment-wide average queue time per request (µs) over 30 s; 0 when idle, never NaN.
        query = (f"sum(rate(nv_inference_queue_duration_us{{{sel}}}[30s])) / "
                 f"clamp_min(sum(rate(nv_inference_request_success{{{sel}}}[30s])), 1e-9)")
        threshold, metric_type = str(int(target)), "Value"
    elif metric == "pendingRequests":
        query = f"sum(nv_inference_pending_request_count{{{sel}}})"
        threshold, metric_type = str(int(target)), "AverageValue"
    else:  # gpuUtilization: Triton reports 0..1, the spec a percentage
        query = f"avg(nv_gpu_utilization{{{sel}}})"
        threshold, metric_type = f"{int(target) / 100:g}", "Value"
    return {"type": "prometheus", "metricType": metric_type, "metadata": {
        "serverAddress": autoscaling.prometheus_address, "query": query, "threshold": threshold}}


def _cron(moment: dt.datetime) -> str:
    return f"{moment.minute} {moment.hour} {moment.day} {moment.month} *"


def cron_triggers(autoscaling: AutoscalingSpec, lead_seconds: int) -> list[dict[str, Any]]:
    """One cron trigger per promotion, starting lead_seconds early, in the promotion's own time zone.
    KEDA's cron has no year: the window recurs on the same date each year until the schedule is removed."""
    triggers = []
    for schedule in autoscaling.schedules:
        tz = schedules.zone(schedule.timezone)
        start = dt.datetime.fromisoformat(schedule.start) - dt.timedelta(seconds=lead_seconds)
        end = dt.datetime.fromisoformat(schedule.end)
        triggers.append({"type": "cron", "name": schedule.name, "metadata": {
            "timezone": tz.key, "start": _cron(start), "end": _cron(end),
            "desiredReplicas": str(schedule.min_replicas)}})
    return triggers


def render_scaled_object(owner: Owner, autoscaling: AutoscalingSpec, lead_seconds: int, metric: str | None = None,
                         target: float | None = None, predictive_floor: int | None = None) -> dict[str, Any]:
    """`predictive_floor` raises minReplicaCount (never above maxReplicaCount); the cron triggers carry the
    schedules' floors."""
    child = names.child_name(owner.name)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": owner.metadata(child),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": child},
            "pollingInterval": POLLING_SECONDS,
            "minReplicaCount": min(max(autoscaling.min_replicas, predictive_floor or 0), autoscaling.max_replicas),
            "maxReplicaCount": autoscaling.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(autoscaling)}},
            "triggers": [prometheus_trigger(owner, autoscaling, metric, target),
                         *cron_triggers(autoscaling, lead_seconds)],
        },
    }
