"""PromotionReady: does the next promotion's floor fit the free GPUs of its product? Pure: clock and cluster
are arguments.

A schedule is checked from `autoscaling.readinessHorizonSeconds` before its floor rises (start minus the lead
time) until its start; during the window Ready and Degraded already tell. With several schedules, the one
that starts first among those inside their horizon is checked. Outside every horizon the condition is
`True, NoUpcomingPromotion` and nothing of the cluster is read for it.

Free GPUs of the product: the allocatable `serving.gpuResource` of the nodes the Triton pods may land on
(labelled `nvidia.com/gpu.product=serving.gpuProduct` when set, matching `serving.nodeSelector`, not
cordoned, and with every NoSchedule/NoExecute taint tolerated), minus the requests of the non-terminated pods
bound to them. GPU headroom placeholders (any ModelDeployment's: they are preempted for a Triton pod) and
this ModelDeployment's own Triton pods count as free.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ..api import schedules
from ..api.spec import GPU_PRODUCT_LABEL, AutoscalingSpec, ModelDeploymentSpec
from ..api.timestamps import rfc3339
from ..render import names
from ..render.deployment import gpu_toleration

PROMOTION_READY = "PromotionReady"
# Reasons
GPUS_AVAILABLE = "GpusAvailable"
INSUFFICIENT_GPUS = "InsufficientGpus"
NO_UPCOMING_PROMOTION = "NoUpcomingPromotion"
NOT_CHECKED = "NotChecked"

# Inside a horizon the check runs again this often: GPUs free up and fill without any event of ours.
RECHECK_SECONDS = 60
# The reads start this much before the horizon computed from the last known lead time, so that a lead
# time that grows this pass (a slower pod start measured) still finds the nodes read.
READ_SLACK_SECONDS = 600
# Pods in these phases hold nothing.
TERMINATED = ("Succeeded", "Failed")
HEADROOM_COMPONENT = "gpu-headroom"


@dataclass(frozen=True)
class Upcoming:
    """The schedule whose readiness is checked now."""

    name: str
    start: dt.datetime
    floor: int       # replicas the floor rises to
    needed: int      # floor x GPUs per replica


@dataclass(frozen=True)
class Check:
    """The outcome: the condition, the status figures and when to look again."""

    status: str
    reason: str
    message: str
    schedule: str | None = None
    needed: int | None = None
    free: int | None = None
    wake_at: dt.datetime | None = None

    @property
    def shortfall(self) -> int:
        return max(0, (self.needed or 0) - (self.free or 0))


# ------------------------------------------------------------------------------------------------ the clock

def _windows(autoscaling: AutoscalingSpec, lead_seconds: int) -> list[schedules.Window]:
    return [schedules.window(s, dt.timedelta(seconds=lead_seconds)) for s in autoscaling.schedules]


def horizon_opens(w: schedules.Window, autoscaling: AutoscalingSpec) -> dt.datetime:
    return w.raise_at - dt.timedelta(seconds=autoscaling.readiness_horizon_seconds)


def upcoming(spec: ModelDeploymentSpec, lead_seconds: int, now: dt.datetime) -> Upcoming | None:
    """The schedule inside its horizon (horizon opened, not started yet) that starts first."""
    autoscaling = spec.autoscaling
    if autoscaling is None or spec.serving.gpus == 0:
        return None
    inside = [w for w in _windows(autoscaling, lead_seconds) if horizon_opens(w, autoscaling) <= now < w.start]
    if not inside:
        return None
    first = min(inside, key=lambda w: (w.start, w.name))
    floor = max(autoscaling.min_replicas, first.min_replicas)
    return Upcoming(first.name, first.start, floor, floor * spec.serving.gpus)


def next_horizon(spec: ModelDeploymentSpec, lead_seconds: int, now: dt.datetime) -> dt.datetime | None:
    """When the next horizon opens (a wake-up), after now."""
    autoscaling = spec.autoscaling
    if autoscaling is None or spec.serving.gpus == 0:
        return None
    opens = [horizon_opens(w, autoscaling) for w in _windows(autoscaling, lead_seconds)]
    later = [o for o in opens if o > now]
    return min(later) if later else None


def needs_reads(spec: ModelDeploymentSpec, lead_seconds: int, now: dt.datetime) -> bool:
    """Whether this pass must list nodes and pods: a schedule is inside (or about to enter) its horizon."""
    autoscaling = spec.autoscaling
    if autoscaling is None or spec.serving.gpus == 0:
        return False
    slack = dt.timedelta(seconds=READ_SLACK_SECONDS)
    return any(horizon_opens(w, autoscaling) - slack <= now < w.start for w in _windows(autoscaling, lead_seconds))


# ----------------------------------------------------------------------------------------------- the nodes

def _quantity(value: Any) -> int:
    """An extended resource's quantity: a whole number ("4", 4); anything else counts as 0."""
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return 0


def _tolerates(tolerations: Sequence[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def pod_tolerations(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """The tolerations of the Triton pods, as the API server stores them."""
    out = [gpu_toleration()] if spec.serving.gpus else []
    return out + [t.model_dump(by_alias=True, exclude_none=True) for t in spec.serving.tolerations]


def eligible(node: dict[str, Any], spec: ModelDeploymentSpec) -> bool:
    """A node the Triton pods may be scheduled on: product, nodeSelector, not cordoned, taints tolerated."""
    serving = spec.serving
    labels = (node.get("metadata") or {}).get("labels") or {}
    if serving.gpu_product and labels.get(GPU_PRODUCT_LABEL) != serving.gpu_product:
        return False
    if any(labels.get(k) != v for k, v in serving.node_selector.items()):
        return False
    node_spec = node.get("spec") or {}
    if node_spec.get("unschedulable"):
        return False
    tolerations = pod_tolerations(spec)
    return all(_tolerates(tolerations, taint) for taint in node_spec.get("taints") or []
               if taint.get("effect") in ("NoSchedule", "NoExecute"))


def pod_request(pod: dict[str, Any], resource: str) -> int:
    """What a pod holds of an extended resource: the larger of its containers' sum and any init container
    (the scheduler's effective request). An extended resource's request defaults to its limit."""
    def one(container: dict[str, Any]) -> int:
        res = container.get("resources") or {}
        value = (res.get("requests") or {}).get(resource, (res.get("limits") or {}).get(resource, 0))
        return _quantity(value)

    pod_spec = pod.get("spec") or {}
    regular = sum(one(c) for c in pod_spec.get("containers") or [])
    init = max((one(c) for c in pod_spec.get("initContainers") or []), default=0)
    return max(regular, init)


def counts_as_free(pod: dict[str, Any], md_namespace: str, md_name: str) -> bool:
    """Headroom placeholders (any ModelDeployment's) and this ModelDeployment's own Triton pods."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get("app.kubernetes.io/component") == HEADROOM_COMPONENT \
            and labels.get("app.kubernetes.io/managed-by") == names.MANAGER:
        return True
    return meta.get("namespace") == md_namespace and labels.get(names.LABEL_MD) == names.child_name(md_name)


def free_gpus(spec: ModelDeploymentSpec, nodes: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]],
              md_namespace: str, md_name: str) -> int:
    resource = spec.serving.gpu_resource
    allocatable = {}
    for node in nodes:
        amount = _quantity(((node.get("status") or {}).get("allocatable") or {}).get(resource, 0))
        if amount > 0 and eligible(node, spec):
            allocatable[node["metadata"]["name"]] = amount
    held = 0
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName") not in allocatable:
            continue
        if (pod.get("status") or {}).get("phase") in TERMINATED or counts_as_free(pod, md_namespace, md_name):
            continue
        held += pod_request(pod, resource)
    return max(0, sum(allocatable.values()) - held)


# ------------------------------------------------------------------------------------------------ the check

def _gpus(count: int) -> str:
    return "GPU" if count == 1 else "GPUs"


def check(spec: ModelDeploymentSpec, lead_seconds: int, now: dt.datetime, md_namespace: str, md_name: str,
          nodes: Sequence[dict[str, Any]] | None, pods: Sequence[dict[str, Any]] | None) -> Check | None:
    """The PromotionReady condition; None when there is nothing to check (no schedules, or CPU serving).
    `nodes`/`pods` None: not read this pass."""
    autoscaling = spec.autoscaling
    if autoscaling is None or not autoscaling.schedules or spec.serving.gpus == 0:
        return None
    nxt = upcoming(spec, lead_seconds, now)
    if nxt is None:
        opens = next_horizon(spec, lead_seconds, now)
        when = f"; the next check opens at {rfc3339(opens)}" if opens else ""
        return Check("True", NO_UPCOMING_PROMOTION,
                     f"No promotion starts within {autoscaling.readiness_horizon_seconds} s "
                     f"(readinessHorizonSeconds) plus its lead time{when}.", wake_at=opens)
    recheck = now + dt.timedelta(seconds=RECHECK_SECONDS)
    if nodes is None or pods is None:
        return Check("Unknown", NOT_CHECKED, f"Promotion {nxt.name}: the GPU nodes and their pods were not read this pass "
                     "(the operator needs list on nodes and pods cluster-wide).",
                     schedule=nxt.name, needed=nxt.needed, wake_at=recheck)
    free = free_gpus(spec, nodes, pods, md_namespace, md_name)
    unit = spec.serving.gpu_product or spec.serving.gpu_resource
    starts = f"promotion {nxt.name} starts at {rfc3339(nxt.start)} with a floor of {nxt.floor} replicas " \
             f"x {spec.serving.gpus} {_gpus(spec.serving.gpus)}"
    if free >= nxt.needed:
        return Check("True", GPUS_AVAILABLE,
                     f"{free} {unit} {_gpus(free)} {'is' if free == 1 else 'are'} free, {starts} "
                     f"({nxt.needed} needed).",
                     schedule=nxt.name, needed=nxt.needed, free=free, wake_at=recheck)
    return Check("False", INSUFFICIENT_GPUS,
                 f"needs {nxt.needed} {unit} {_gpus(nxt.needed)}, {free} {'is' if free == 1 else 'are'} free: "
                 f"{starts}. Free GPUs, add {unit} nodes, or lower the schedule's minReplicas.",
                 schedule=nxt.name, needed=nxt.needed, free=free, wake_at=recheck)
