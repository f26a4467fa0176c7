"""PromotionReady (decide/promotion.py): does the next promotion's floor fit the free GPUs? Tables of nodes and
pods as data, the clock as an argument."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from peakserve.api.validation import spec_or_reason
from peakserve.decide import decide
from peakserve.decide import promotion
from peakserve.decide.snapshot import Snapshot, promotion_reads
from peakserve.render.headroom import headroom_labels
from peakserve.render.names import selector_labels

UTC = dt.timezone.utc
START = dt.datetime(2026, 11, 10, 16, 0, tzinfo=UTC)       # singles-day, 00:00 in Shanghai
NOW = START - dt.timedelta(hours=2)                         # inside the default 24 h horizon
LEAD = 300
A10, H100 = "NVIDIA-A10", "NVIDIA-H100-80GB-HBM3"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def spec(floor: int = 12, gpus: int = 1, product: str | None = A10, horizon: int | None = None,
         tolerations: list[dict[str, Any]] | None = None, node_selector: dict[str, str] | None = None):
    autoscaling: dict[str, Any] = {
        "minReplicas": 2, "maxReplicas": 40, "leadTimeSeconds": LEAD,
        "schedules": [{"name": "singles-day", "start": "2026-11-11T00:00:00", "end": "2026-11-11T02:00:00",
                       "timezone": "Asia/Shanghai", "minReplicas": floor}]}
    if horizon is not None:
        autoscaling["readinessHorizonSeconds"] = horizon
    serving: dict[str, Any] = {"gpus": gpus, "tolerations": tolerations or [], "nodeSelector": node_selector or {}}
    if product:
        serving["gpuProduct"] = product
    parsed = spec_or_reason({
        "model": {"name": "ranker", "uri": "/models/ranker/1",
                  "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
                  "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]},
        "serving": serving, "autoscaling": autoscaling})
    assert not isinstance(parsed, Exception) and hasattr(parsed, "serving"), parsed
    return parsed


def node(name: str, gpus: int, product: str | None = A10, taints: list[dict[str, Any]] | None = None,
         unschedulable: bool = False, labels: dict[str, str] | None = None) -> dict[str, Any]:
    node_labels = {**({"nvidia.com/gpu.product": product} if product else {}), **(labels or {})}
    node_spec: dict[str, Any] = {"taints": [GPU_TAINT] if taints is None else taints}
    if unschedulable:
        node_spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": node_labels}, "spec": node_spec,
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "48"}}}


def pod(node_name: str | None, gpus: int, namespace: str = "other", labels: dict[str, str] | None = None,
        phase: str = "Running", limits_only: bool = False, init_gpus: int = 0) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if limits_only else \
        {"requests": {"nvidia.com/gpu": str(gpus), "cpu": "1"}, "limits": {"nvidia.com/gpu": str(gpus)}}
    pod_spec: dict[str, Any] = {"containers": [{"name": "c", "resources": resources}]}
    if node_name:
        pod_spec["nodeName"] = node_name
    if init_gpus:
        pod_spec["initContainers"] = [{"name": "i", "resources": {"requests": {"nvidia.com/gpu": str(init_gpus)}}}]
    return {"metadata": {"name": f"p-{node_name}-{gpus}", "namespace": namespace, "labels": labels or {}},
            "spec": pod_spec, "status": {"phase": phase}}


OWN = selector_labels("ranker")
HEADROOM = headroom_labels("someone-else")
TWO_A10 = [node("a10-0", 8), node("a10-1", 8)]

# (name, spec kwargs, nodes, pods, expected free)
FREE_CASES = [
    ("all free", {}, TWO_A10, [], 16),
    ("other pods' requests are subtracted", {}, TWO_A10, [pod("a10-0", 4), pod("a10-1", 2)], 10),
    ("an extended resource's request defaults to its limit", {}, TWO_A10, [pod("a10-0", 3, limits_only=True)], 13),
    ("an init container asks for more than the containers", {}, TWO_A10, [pod("a10-0", 1, init_gpus=4)], 12),
    ("terminated pods hold nothing", {}, TWO_A10,
     [pod("a10-0", 4, phase="Succeeded"), pod("a10-1", 4, phase="Failed")], 16),
    ("pods on other nodes, or not bound, are not counted", {}, TWO_A10, [pod("h100-0", 8), pod(None, 8)], 16),
    ("headroom placeholders count as free", {}, TWO_A10, [pod("a10-0", 4, labels=HEADROOM)], 16),
    ("this model's own Triton pods count as free", {}, TWO_A10, [pod("a10-0", 4, namespace="shop", labels=OWN)], 16),
    ("the same labels in another namespace are another model", {}, TWO_A10,
     [pod("a10-0", 4, namespace="elsewhere", labels=OWN)], 12),
    ("product filter: other products do not count", {}, TWO_A10 + [node("h100-0", 8, H100)], [], 16),
    ("no product: every node with the resource", {"product": None},
     TWO_A10 + [node("h100-0", 8, H100), node("cpu-0", 0, None, taints=[])], [], 24),
    ("cordoned nodes are left out", {}, [node("a10-0", 8), node("a10-1", 8, unschedulable=True)], [], 8),
    ("untolerated taints leave a node out", {},
     [node("a10-0", 8), node("a10-1", 8, taints=[GPU_TAINT, {"key": "probed", "value": "true",
                                                              "effect": "NoSchedule"}])], [], 8),
    ("tolerated taints keep it", {"tolerations": [{"key": "probed", "operator": "Equal", "value": "true",
                                                   "effect": "NoSchedule"}]},
     [node("a10-0", 8), node("a10-1", 8, taints=[GPU_TAINT, {"key": "probed", "value": "true",
                                                              "effect": "NoSchedule"}])], [], 16),
    ("PreferNoSchedule taints do not exclude", {},
     [node("a10-0", 8, taints=[GPU_TAINT, {"key": "x", "effect": "PreferNoSchedule"}])], [], 8),
    ("nodeSelector must match", {"node_selector": {"pool": "serving"}},
     [node("a10-0", 8, labels={"pool": "serving"}), node("a10-1", 8)], [], 8),
    ("more held than allocatable is 0 free, not negative", {}, [node("a10-0", 2)], [pod("a10-0", 4)], 0),
]


@pytest.mark.parametrize("name,kwargs,nodes,pods,free", FREE_CASES, ids=[c[0] for c in FREE_CASES])
def test_free_gpus(name, kwargs, nodes, pods, free):
    assert promotion.free_gpus(spec(**kwargs), nodes, pods, "shop", "ranker") == free


def check(s, nodes=TWO_A10, pods=(), now=NOW):
    return promotion.check(s, LEAD, now, "shop", "ranker", list(nodes) if nodes is not None else None,
                           list(pods) if pods is not None else None)


def test_fits():
    result = check(spec(floor=12))
    assert (result.status, result.reason) == ("True", promotion.GPUS_AVAILABLE)
    assert (result.schedule, result.needed, result.free, result.shortfall) == ("singles-day", 12, 16, 0)
    assert result.message.startswith("16 NVIDIA-A10 GPUs are free, promotion singles-day starts at "
                                     "2026-11-10T16:00:00Z with a floor of 12 replicas x 1 GPU")
    assert result.wake_at == NOW + dt.timedelta(seconds=promotion.RECHECK_SECONDS)


def test_shortfall_with_message():
    result = check(spec(floor=18, gpus=2), pods=[pod("a10-0", 4)])
    assert (result.status, result.reason) == ("False", promotion.INSUFFICIENT_GPUS)
    assert result.message.startswith("needs 36 NVIDIA-A10 GPUs, 12 are free: promotion singles-day")
    assert (result.needed, result.free, result.shortfall) == (36, 12, 24)


def test_without_a_product_the_message_names_the_resource():
    result = check(spec(floor=20, product=None))
    assert result.message.startswith("needs 20 nvidia.com/gpu GPUs, 16 are free")


def test_the_floor_is_never_below_min_replicas():
    assert check(spec(floor=1)).needed == 2   # minReplicas 2 > the schedule's 1


@pytest.mark.parametrize("now,inside", [
    (START - dt.timedelta(seconds=86400 + LEAD + 1), False),  # before the horizon opens
    (START - dt.timedelta(seconds=86400 + LEAD), True),       # the horizon opens: 24 h before the raise
    (START - dt.timedelta(seconds=1), True),                  # the floor has risen, not started yet
    (START, False),                                           # the window: Ready and Degraded tell
    (START + dt.timedelta(hours=3), False),                   # over
])
def test_horizon(now, inside):
    result = check(spec(), now=now)
    assert (result.reason != promotion.NO_UPCOMING_PROMOTION) == inside
    if inside:  # the reads start a little before the horizon (READ_SLACK_SECONDS), never after it
        assert promotion.needs_reads(spec(), LEAD, now)


def test_outside_the_horizon_it_is_true_and_wakes_when_the_horizon_opens():
    now = START - dt.timedelta(days=3)
    result = check(spec(), nodes=None, pods=None, now=now)
    assert (result.status, result.reason, result.schedule) == ("True", promotion.NO_UPCOMING_PROMOTION, None)
    assert result.wake_at == START - dt.timedelta(seconds=86400 + LEAD)
    assert not promotion.needs_reads(spec(), LEAD, now)


def test_the_horizon_is_configurable():
    assert check(spec(horizon=3600)).reason == promotion.NO_UPCOMING_PROMOTION   # 2 h before: not yet
    assert check(spec(horizon=3600), now=START - dt.timedelta(minutes=30)).reason == promotion.GPUS_AVAILABLE


def test_the_earliest_schedule_inside_its_horizon_is_checked():
    s = spec()
    later = s.autoscaling.schedules[0].model_copy(update={"name": "double-twelve", "start": "2026-11-11T06:00:00",
                                                          "end": "2026-11-11T08:00:00", "min_replicas": 40})
    s = s.model_copy(update={"autoscaling": s.autoscaling.model_copy(
        update={"schedules": [later, *s.autoscaling.schedules]})})
    result = check(s)
    assert (result.schedule, result.needed) == ("singles-day", 12)


def test_not_read_is_unknown():
    result = check(spec(), nodes=None, pods=None)
    assert (result.status, result.reason) == ("Unknown", promotion.NOT_CHECKED)


def test_nothing_to_check_without_schedules_or_gpus():
    s = spec()
    assert check(s.model_copy(update={"autoscaling": s.autoscaling.model_copy(update={"schedules": []})})) is None
    cpu = spec(product=None)
    assert check(cpu.model_copy(update={"serving": cpu.serving.model_copy(update={"gpus": 0})})) is None


# ------------------------------------------------------------------------------------- reads and decide

def body(s_kwargs: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    s = spec(**(s_kwargs or {}))
    return {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "ranker", "namespace": "shop", "uid": "u-1", "generation": 1},
            "spec": s.model_dump(mode="json", by_alias=True, exclude_none=True), "status": status or {}}


def test_reads_only_inside_the_horizon():
    b = body()
    s = spec_or_reason(b["spec"])
    snap = Snapshot(body=b)
    assert promotion_reads(snap, s, START - dt.timedelta(days=3)) == []
    nodes, pods = promotion_reads(snap, s, NOW)
    assert (nodes.kind, nodes.selector, nodes.cluster) == ("Node", "nvidia.com/gpu.product=NVIDIA-A10", True)
    assert (pods.kind, pods.field_selector, pods.cluster) == (
        "Pod", "status.phase!=Succeeded,status.phase!=Failed", True)
    no_product = body({"product": None})
    assert promotion_reads(Snapshot(body=no_product), spec_or_reason(no_product["spec"]), NOW)[0].selector is None


def plan(b: dict[str, Any], nodes, pods, now=NOW):
    snap = Snapshot(body=b, cause="drift", nodes=tuple(nodes), node_pods=tuple(pods),
                    read=frozenset({"deployment", "hpa", "headroom", "canary", "nodes", "node_pods"}))
    return decide(spec_or_reason(b["spec"]), snap, now)


def test_decide_reports_the_condition_status_and_event():
    b = body({"floor": 18, "gpus": 2})
    first = plan(b, TWO_A10, [pod("a10-0", 4)])
    status = first.summary()["status"]
    cond = next(c for c in status["conditions"] if c["type"] == "PromotionReady")
    assert (cond["status"], cond["reason"]) == ("False", "InsufficientGpus")
    assert cond["message"].startswith("needs 36 NVIDIA-A10 GPUs, 12 are free")
    assert cond["observedGeneration"] == 1 and cond["lastTransitionTime"] == "2026-11-10T14:00:00Z"
    assert status["autoscaling"]["promotion"] == {"schedule": "singles-day", "neededGpus": 36, "freeGpus": 12}
    assert any(e.type == "Warning" and e.reason == "InsufficientGpus" and "PromotionReady=False" in e.message
               for e in first.events)
    assert first.wake_at == NOW + dt.timedelta(seconds=60)

    # GPUs free up: the condition turns True, with an Event of the transition.
    b["status"] = status
    later = NOW + dt.timedelta(minutes=1)
    second = plan(b, TWO_A10 + [node("a10-2", 8), node("a10-3", 16)], [pod("a10-0", 4)], later)
    cond = next(c for c in second.summary()["status"]["conditions"] if c["type"] == "PromotionReady")
    assert (cond["status"], cond["reason"]) == ("True", "GpusAvailable")
    assert any(e.type == "Normal" and e.reason == "GpusAvailable" for e in second.events)


def test_decide_outside_the_horizon():
    now = START - dt.timedelta(days=3)
    result = plan(body(), [], [], now)
    status = result.summary()["status"]
    cond = next(c for c in status["conditions"] if c["type"] == "PromotionReady")
    assert (cond["status"], cond["reason"]) == ("True", "NoUpcomingPromotion")
    assert "promotion" not in status["autoscaling"]
    assert not any(e.reason == "NoUpcomingPromotion" for e in result.events)   # a healthy first condition
    assert result.wake_at == START - dt.timedelta(seconds=86400 + LEAD)
