"""The autoscaling decisions the clock and the cluster make: engine, replica floor, lead time.

The floor comes from schedules.floor_at(now): recomputed at every reconcile, never remembered. The
operator asks to be woken at the next change, so the HPA's minReplicas moves on time.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from . import schedules
from .api.spec import ModelDeploymentSpec
from .kube import Kube, rfc3339
from .render import ScalingPlan, names
from .render.owner import Owner

KEDA = "keda.sh/v1alpha1"
DISCOVERY_TTL = 60.0
_keda_seen: dict[str, tuple[float, bool]] = {}


@dataclass(frozen=True)
class ScalingDecision:
    plan: ScalingPlan
    status: dict[str, Any]
    next_change: dt.datetime | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def keda_installed(kube: Kube) -> bool:
    """Whether the cluster serves ScaledObjects; asked at most once a minute."""
    seen = _keda_seen.get("keda")
    if seen and time.monotonic() - seen[0] < DISCOVERY_TTL:
        return seen[1]
    answer = kube.serves(KEDA)
    _keda_seen["keda"] = (time.monotonic(), answer)
    return answer


def startup_seconds(pods: list[dict[str, Any]]) -> int | None:
    """Longest pod creation -> Ready among the pods: image pull, Triton start and model load together."""
    longest = None
    for pod in pods:
        created = pod["metadata"].get("creationTimestamp")
        ready = next((c for c in (pod.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Ready" and c.get("status") == "True"), None)
        if not (created and ready and ready.get("lastTransitionTime")):
            continue
        seconds = (dt.datetime.fromisoformat(ready["lastTransitionTime"].replace("Z", "+00:00"))
                   - dt.datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        longest = max(longest or 0, int(seconds))
    return longest


def _measured(kube: Kube, owner: Owner, previous: dict[str, Any]) -> int | None:
    now = startup_seconds(kube.list("v1", "Pod", owner.namespace, names.pod_selector(owner.name)))
    before = (previous.get("autoscaling") or {}).get("measuredStartupSeconds")
    return max(x for x in (now, before) if x is not None) if (now or before) else None


def plan_scaling(kube: Kube, owner: Owner, spec: ModelDeploymentSpec, previous: dict[str, Any],
                 now: dt.datetime | None = None) -> ScalingDecision | None:
    autoscaling = spec.autoscaling
    if autoscaling is None:
        return None
    engine = autoscaling.engine
    if engine == "auto":
        engine = "keda" if keda_installed(kube) else "hpa"
    measured = None
    if autoscaling.schedules and autoscaling.lead_time_seconds is None:
        measured = _measured(kube, owner, previous)
    lead = schedules.lead_time(autoscaling, measured)
    floor = schedules.floor_at(now or _now(), autoscaling, lead)
    status = {"engine": engine, "floor": floor.replicas, "activeSchedule": floor.active,
              "nextSchedule": floor.next_schedule, "nextChange": rfc3339(floor.next_change) if floor.next_change else None,
              "leadTimeSeconds": lead if autoscaling.schedules else None, "measuredStartupSeconds": measured}
    return ScalingDecision(plan=ScalingPlan(engine=engine, floor=floor.replicas, lead_seconds=lead),
                           status={k: v for k, v in status.items() if v is not None},
                           next_change=floor.next_change)
