"""The autoscaling decisions the clock and the cluster make: engine, replica floor, lead time. Pure.

The floor comes from schedules.floor_at(now): recomputed at every pass, never remembered. The plan
asks for a wake-up at the next change, so the HPA's minReplicas moves on time. The predictive floor
(decide/predictive.py) can only raise it; the metric and target in force come from decide/capacity_target.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..api import schedules
from ..api.spec import AutoscalingSpec, AutoscalingStatus
from ..api.timestamps import parse_rfc3339, rfc3339
from ..render import ScalingPlan
from .capacity_target import capacity_status, resolve_signal
from .predictive import decide_predictive
from .range_result import RangeResult



@dataclass(frozen=True)
class ScalingDecision:
    plan: ScalingPlan
    status: AutoscalingStatus
    next_change: dt.datetime | None
    wake_at: dt.datetime | None = None   # the next forecast of the predictive floor


def startup_seconds(pods: Sequence[dict[str, Any]]) -> int | None:
    """Longest pod creation -> Ready among the pods: image pull, Triton start and model load together."""
    longest = None
    for pod in pods:
        created = pod["metadata"].get("creationTimestamp")
        ready = next((c for c in (pod.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Ready" and c.get("status") == "True"), None)
        if not (created and ready and ready.get("lastTransitionTime")):
            continue
        seconds = (parse_rfc3339(ready["lastTransitionTime"]) - parse_rfc3339(created)).total_seconds()
        longest = max(longest or 0, int(seconds))
    return longest


def remembered_startup(pods: Sequence[dict[str, Any]] | None, previous: dict[str, Any]) -> int | None:
    """status.autoscaling.measuredStartupSeconds is memory: the longest start ever seen, because the pods
    that started slowest may be gone by the next pass. `pods` None: not listed this pass."""
    now = startup_seconds(pods or ())
    before = (previous.get("autoscaling") or {}).get("measuredStartupSeconds")
    known = [x for x in (now, before) if x is not None]
    return max(known) if known else None


def decide_scaling(autoscaling: AutoscalingSpec, keda_served: bool, pods: Sequence[dict[str, Any]] | None,
                   previous: dict[str, Any], now: dt.datetime,
                   metrics: Mapping[str, RangeResult] | None = None) -> ScalingDecision:
    """`metrics`: what this pass read from Prometheus (decide/snapshot.py metrics_reads); the capacity and the
    predictive floor not read this pass come from status (memory, see capacity_target and predictive)."""
    engine = autoscaling.engine
    if engine == "auto":
        engine = "keda" if keda_served else "hpa"
    measured = None
    if autoscaling.schedules and autoscaling.lead_time_seconds is None:
        measured = remembered_startup(pods, previous)
    lead = schedules.lead_time(autoscaling, measured)
    floor = schedules.floor_at(now, autoscaling, lead)
    before = previous.get("autoscaling") or {}
    capacity = capacity_status(autoscaling, metrics or {}, before.get("capacity"), now)
    signal = resolve_signal(autoscaling, capacity)
    predictive = decide_predictive(autoscaling, signal, metrics or {}, before.get("predictive"), lead, now)
    # The floor in force: spec minReplicas, a schedule's floor, the forecast's; the forecast never lowers the others.
    in_force = max(floor.replicas, predictive.floor)
    status = AutoscalingStatus(
        metric=signal.metric, target=signal.text, capacity=capacity, predictive=predictive.status,
        engine=engine, floor=in_force, active_schedule=floor.active, next_schedule=floor.next_schedule,
        next_change=rfc3339(floor.next_change) if floor.next_change else None,
        lead_time_seconds=lead if autoscaling.schedules else None, measured_startup_seconds=measured)
    plan = ScalingPlan(engine=engine, floor=in_force, lead_seconds=lead, metric=signal.metric, target=signal.target,
                       predictive_floor=predictive.floor or None)
    return ScalingDecision(plan=plan, status=status, next_change=floor.next_change, wake_at=predictive.wake_at)
