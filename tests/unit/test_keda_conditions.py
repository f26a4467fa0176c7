"""KEDA's ScaledObject conditions in the ModelDeployment's Degraded condition, and when the ScaledObject is read.

The ScaledObjects are shaped like KEDA v2.21 writes them (controllers/keda/scaledobject_controller.go,
pkg/scaling/executor/scale_scaledobjects.go): Ready, Active, Fallback, Paused, and HPAActive once its HPA
reported ScalingActive.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from peakserve.api.validation import spec_or_reason
from peakserve.decide import decide
from peakserve.decide.conditions import Observed, derive_conditions
from peakserve.decide.snapshot import CHILD, DRIFT, SPEC, Snapshot, first_reads

T0 = "2026-11-10T09:00:00Z"
NOW = dt.datetime(2026, 11, 10, 9, 30, tzinfo=dt.timezone.utc)
UID = "6f1c2a3e-0000-4000-8000-000000000001"

TRIGGER_ERROR = "Triggers defined in ScaledObject are not working correctly"
HPA_METRIC_ERROR = ("HPA is not actively scaling: the HPA was unable to compute the replica count: unable to get "
                    "external metric shop/s0-prometheus/&LabelSelector{...}: unable to fetch metrics from external "
                    "metrics API: rpc error: code = Unknown desc = error when getting metric values metric:"
                    "s0-prometheus encountered error: Get \"http://127.0.0.1:9/api/v1/query\": dial tcp "
                    "127.0.0.1:9: connect: connection refused")


def keda_condition(ctype: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    c = {"type": ctype, "status": status}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def scaled_object(*conditions: dict[str, Any], owner_uid: str = UID) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "ranker", "namespace": "shop", "ownerReferences": [{"uid": owner_uid}]},
            "status": {"hpaName": "keda-hpa-ranker", "conditions": list(conditions)}}


READY = keda_condition("Ready", "True", "ScaledObjectReady", "ScaledObject is defined correctly and is ready for scaling")
IDLE = keda_condition("Active", "False", "ScalerNotActive", "Scaling is not performed because triggers are not active")
ACTIVE = keda_condition("Active", "True", "ScalerActive", "Scaling is performed because triggers are active")
NO_FALLBACK = keda_condition("Fallback", "False", "NoFallbackFound", "No fallbacks are active on this scaled object")
NOT_PAUSED = keda_condition("Paused", "False")
HPA_OK = keda_condition("HPAActive", "True", "HPAActive", "HPA is actively scaling")

HEALTHY = scaled_object(READY, IDLE, NO_FALLBACK, NOT_PAUSED, HPA_OK)
# GetInitializedConditions: what a fresh ScaledObject shows before KEDA's first check.
INITIALIZING = scaled_object(keda_condition("Ready", "Unknown"), keda_condition("Active", "Unknown"),
                             keda_condition("Fallback", "Unknown"), NOT_PAUSED)


def deployment() -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ranker", "generation": 3},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                       "availableReplicas": 2, "conditions": [
                           {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                           {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}}


def degraded(so: dict[str, Any] | None) -> dict[str, Any]:
    obs = Observed(generation=3, deployment=deployment(), endpoint="http://ranker.shop.svc:8000", scaled_object=so)
    return next(c for c in derive_conditions(obs, [], T0) if c["type"] == "Degraded")


# --- the mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize("so", [HEALTHY, INITIALIZING, None,
                                scaled_object(READY, ACTIVE, NO_FALLBACK, NOT_PAUSED, HPA_OK),
                                scaled_object(READY, IDLE, NO_FALLBACK, keda_condition(
                                    "Paused", "True", "ScaledObjectPaused", "ScaledObject is paused")),
                                scaled_object(READY, IDLE, NO_FALLBACK, NOT_PAUSED, keda_condition(
                                    "HPAActive", "True", "ScalingDisabled", "scaling is disabled since replicas is 0"))],
                         ids=["healthy", "initializing", "none", "active", "paused", "scaled-to-zero"])
def test_a_working_or_idle_scaled_object_is_not_degraded(so):
    c = degraded(so)
    assert (c["status"], c["reason"]) == ("False", "AsExpected")


def test_ready_false_trigger_error_degrades_with_kedas_message():
    c = degraded(scaled_object(keda_condition("Ready", "False", "TriggerError", TRIGGER_ERROR), IDLE, NO_FALLBACK,
                               NOT_PAUSED))
    assert (c["status"], c["reason"]) == ("True", "AutoscalerFailing")
    assert "ScaledObject ranker" in c["message"]
    assert f"Ready=False (TriggerError): {TRIGGER_ERROR}" in c["message"]


def test_a_failed_check_degrades():
    msg = "ScaledObject doesn't have correct scaleTargetRef specification: deployments.apps \"ranker\" not found"
    c = degraded(scaled_object(keda_condition("Ready", "False", "ScaledObjectCheckFailed", msg),
                               keda_condition("Active", "Unknown", "UnknownState", "ScaledObject check failed"),
                               NO_FALLBACK, NOT_PAUSED))
    assert (c["status"], c["reason"]) == ("True", "AutoscalerFailing")
    assert msg in c["message"]


def test_partial_trigger_error_degrades():
    # One trigger (cron) is active while the Prometheus trigger fails: Ready turns Unknown, not False.
    c = degraded(scaled_object(keda_condition("Ready", "Unknown", "PartialTriggerError",
                                              "Some triggers defined in ScaledObject are not working correctly"),
                               ACTIVE, NO_FALLBACK, NOT_PAUSED))
    assert (c["status"], c["reason"]) == ("True", "AutoscalerFailing")
    assert "PartialTriggerError" in c["message"]


def test_active_fallback_degrades():
    c = degraded(scaled_object(READY, IDLE, keda_condition("Fallback", "True", "FallbackExists",
                                                           "At least one trigger is falling back on this scaled object"),
                               NOT_PAUSED))
    assert (c["status"], c["reason"]) == ("True", "AutoscalerFailing")
    assert "Fallback=True (FallbackExists)" in c["message"]


def test_hpa_that_cannot_read_kedas_metrics_degrades():
    c = degraded(scaled_object(READY, IDLE, NO_FALLBACK, NOT_PAUSED,
                               keda_condition("HPAActive", "False", "FailedGetExternalMetric", HPA_METRIC_ERROR)))
    assert (c["status"], c["reason"]) == ("True", "AutoscalerFailing")
    assert "connection refused" in c["message"]


def test_every_failing_condition_is_reported():
    c = degraded(scaled_object(keda_condition("Ready", "False", "TriggerError", TRIGGER_ERROR), IDLE, NO_FALLBACK,
                               NOT_PAUSED, keda_condition("HPAActive", "False", "FailedGetExternalMetric",
                                                          HPA_METRIC_ERROR)))
    assert "TriggerError" in c["message"] and "FailedGetExternalMetric" in c["message"]


# --- through decide(): which ScaledObject speaks, and when it is read ---------------------------------


def spec_body(engine: str | None = "keda", autoscaling: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "ranker", "uri": "pvc://model-store/ranker/1", "maxBatchSize": 256,
                  "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
                  "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]},
        "serving": {"gpus": 1, "gpuProduct": "NVIDIA-A10"},
    }
    if autoscaling:
        spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": 4, "metric": "queueTime",
                               **({"engine": engine} if engine else {})}
    else:
        spec["replicas"] = 2
    return spec


def snapshot(spec: dict[str, Any], cause: str = DRIFT, keda_served: bool = True, **read: Any) -> Snapshot:
    body = {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "ranker", "namespace": "shop", "uid": UID, "generation": 3}, "spec": spec}
    return Snapshot(body=body, cause=cause, keda_served=keda_served, read=frozenset(read), **read)


FAILING = scaled_object(keda_condition("Ready", "False", "TriggerError", TRIGGER_ERROR), IDLE, NO_FALLBACK, NOT_PAUSED)


def plan_degraded(snap: Snapshot) -> dict[str, Any]:
    plan = decide(spec_or_reason(snap.body["spec"]), snap, NOW)
    return next(c for c in plan.summary()["status"]["conditions"] if c["type"] == "Degraded")


@pytest.mark.parametrize("engine,keda_served", [("keda", True), ("keda", False), (None, True)],
                         ids=["keda", "keda-before-discovery-sees-it", "auto-where-served"])
def test_decide_maps_our_failing_scaled_object(engine, keda_served):
    snap = snapshot(spec_body(engine), keda_served=keda_served, deployment=deployment(), hpa=None,
                    headroom=None, scaled_object=FAILING)
    c = plan_degraded(snap)
    assert (c["status"], c["reason"]) == ("True", "AutoscalerFailing")
    assert TRIGGER_ERROR in c["message"]


@pytest.mark.parametrize("case", ["hpa-engine", "auto-not-served", "not-ours", "no-autoscaling"])
def test_decide_ignores_a_scaled_object_that_does_not_scale_this_spec(case):
    spec = {"hpa-engine": spec_body("hpa"), "auto-not-served": spec_body(None), "not-ours": spec_body("keda"),
            "no-autoscaling": spec_body(autoscaling=False)}[case]
    so = scaled_object(*FAILING["status"]["conditions"], owner_uid="someone-else") if case == "not-ours" else FAILING
    snap = snapshot(spec, keda_served=case != "auto-not-served", deployment=deployment(), hpa=None, headroom=None,
                    scaled_object=so)
    c = plan_degraded(snap)
    assert (c["status"], c["reason"]) == ("False", "AsExpected")


def reads(snap: Snapshot) -> list[str]:
    return [r.slot for r in first_reads(snap, spec_or_reason(snap.body["spec"]))]


@pytest.mark.parametrize("engine,keda_served,cause,expected", [
    ("keda", True, CHILD, True),      # a child event: read because KEDA scales this spec
    ("keda", False, CHILD, True),     # discovery has not seen KEDA yet: the engine is named
    (None, True, CHILD, True),        # auto resolves to keda where it is served
    (None, False, CHILD, False),      # auto resolves to the HPA
    ("hpa", True, CHILD, False),      # a child event with the HPA engine: nothing to prune, nothing to map
    ("hpa", True, SPEC, True),        # pruning passes read it where it is served (to delete ours)
    ("hpa", False, DRIFT, False),
    ("keda", False, DRIFT, True),
])
def test_the_scaled_object_is_read_whenever_keda_scales_the_spec(engine, keda_served, cause, expected):
    slots = reads(snapshot(spec_body(engine), cause=cause, keda_served=keda_served))
    assert ("scaled_object" in slots) is expected
    assert slots.count("scaled_object") <= 1
