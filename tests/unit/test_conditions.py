"""Status conditions from observed objects. The inputs are shaped like what the API server returns."""

from __future__ import annotations

from typing import Any

import pytest

from peakserve.api.spec import Condition
from peakserve.decide.conditions import Observed, derive_conditions, event_type, transitions

T0, T1 = "2025-11-28T09:00:00Z", "2025-11-28T09:05:00Z"
ENDPOINT = "http://ranker.default.svc:8000"
INSUFFICIENT_GPU_MSG = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are "
                        "available: 3 No preemption victims found for incoming pod.")
SELECTOR_MSG = ("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: "
                "0/3 nodes are available: 3 Preemption is not helpful for scheduling.")


def k8s_condition(ctype: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": T0, "lastTransitionTime": T0}


def deployment(replicas: int = 2, ready: int | None = None, available: int | None = None,
               updated: int | None = None, generation: int = 3, observed_generation: int | None = None,
               conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    ready = replicas if ready is None else ready
    available = ready if available is None else available
    updated = replicas if updated is None else updated
    if conditions is None:
        conditions = [
            k8s_condition("Available", "True" if available > 0 else "False",
                          "MinimumReplicasAvailable" if available > 0 else "MinimumReplicasUnavailable"),
            k8s_condition("Progressing", "True", "NewReplicaSetAvailable",
                          'ReplicaSet "ranker-5d8f9c7b6d" has successfully progressed.'),
        ]
    status = {"observedGeneration": generation if observed_generation is None else observed_generation,
              "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
              "availableReplicas": available, "conditions": conditions}
    # The API server omits zero counts.
    status = {k: v for k, v in status.items() if v != 0}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ranker", "namespace": "default", "generation": generation},
            "spec": {"replicas": replicas}, "status": status}


def pending_pod(message: str, name: str = "ranker-5d8f9c7b6d-x2x7q", terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if terminating:
        meta["deletionTimestamp"] = T0
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                 "lastProbeTime": None, "lastTransitionTime": T0}]}}


def running_pod(name: str = "ranker-5d8f9c7b6d-abcde") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": T0},
                {"type": "Ready", "status": "True", "lastTransitionTime": T0}]}}


def hpa(scaling_active: str, message: str = "", reason: str = "ValidMetricFound") -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "ranker", "namespace": "default"},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "conditions": [
                {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "lastTransitionTime": T0},
                {"type": "ScalingActive", "status": scaling_active, "reason": reason, "message": message,
                 "lastTransitionTime": T0}]}}


def derive(obs: Observed, previous: list[dict[str, Any]] | None = None, now: str = T1) -> dict[str, dict]:
    conditions = derive_conditions(obs, previous or [], now)
    assert [c["type"] for c in conditions] == ["Ready", "Progressing", "Degraded"]
    return {c["type"]: c for c in conditions}


def observed(**kw) -> Observed:
    kw.setdefault("generation", 3)
    kw.setdefault("endpoint", ENDPOINT)
    return Observed(**kw)


# --- Ready ------------------------------------------------------------------------------------


def test_serving_when_available_and_ready():
    c = derive(observed(deployment=deployment(replicas=2), pods=[running_pod(), running_pod("b")]))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Serving")
    assert "2/2" in c["Ready"]["message"] and ENDPOINT in c["Ready"]["message"]
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("False", "RolloutComplete")
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("False", "AsExpected")


def test_available_but_no_ready_pod_is_not_serving():
    # With maxUnavailable 1, a one-replica Deployment reports Available even when its only pod is loading.
    dep = deployment(replicas=1, ready=0, available=0,
                     conditions=[k8s_condition("Available", "True", "MinimumReplicasAvailable")])
    c = derive(observed(deployment=dep))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "ReplicasNotReady")


def test_no_deployment_yet():
    c = derive(observed())
    assert c["Ready"]["status"] == "Unknown"
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "RollingOut")


def test_scaled_to_zero():
    c = derive(observed(deployment=deployment(replicas=0)))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "ScaledToZero")


def test_insufficient_gpu():
    dep = deployment(replicas=2, ready=0)
    c = derive(observed(deployment=dep, pods=[pending_pod(INSUFFICIENT_GPU_MSG, "a"), pending_pod(INSUFFICIENT_GPU_MSG, "b")],
                        gpus=2, gpu_product="NVIDIA-A10"))
    ready = c["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InsufficientGPU")
    assert "2 pod(s) cannot be scheduled" in ready["message"]
    assert "NVIDIA-A10" in ready["message"] and "2 free nvidia.com/gpu" in ready["message"]
    # The scheduler's own first sentence is quoted; its preemption chatter is not.
    assert "Scheduler: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu" in ready["message"]
    assert "preemption" not in ready["message"]


def test_insufficient_mig_slice():
    msg = "0/2 nodes are available: 2 Insufficient nvidia.com/mig-1g.10gb. preemption: not helpful."
    c = derive(observed(deployment=deployment(ready=0), pods=[pending_pod(msg)], gpu_resource="nvidia.com/mig-1g.10gb"))
    assert c["Ready"]["reason"] == "InsufficientGPU"


def test_gpu_product_unavailable():
    c = derive(observed(deployment=deployment(ready=0), pods=[pending_pod(SELECTOR_MSG)], gpu_product="NVIDIA-H100"))
    ready = c["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "GPUProductUnavailable")
    assert "nvidia.com/gpu.product=NVIDIA-H100" in ready["message"]


def test_selector_mismatch_without_gpu_product_is_not_blamed_on_the_product():
    # The mismatch then comes from the user's own nodeSelector or affinity.
    c = derive(observed(deployment=deployment(ready=0), pods=[pending_pod(SELECTOR_MSG)], gpu_product=None))
    assert c["Ready"]["reason"] == "Unschedulable"


def test_missing_model_claim():
    msg = '0/3 nodes are available: persistentvolumeclaim "model-store" not found. preemption: not helpful.'
    c = derive(observed(deployment=deployment(ready=0), pods=[pending_pod(msg)]))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "ModelStorageUnavailable")
    assert "spec.model.uri" in c["Ready"]["message"]


def test_unbound_model_claim():
    # The scheduler's VolumeBinding plugin capitalises the word here.
    msg = "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: not helpful."
    c = derive(observed(deployment=deployment(ready=0), pods=[pending_pod(msg)]))
    assert c["Ready"]["reason"] == "ModelStorageUnavailable"


def test_insufficient_cpu_or_memory():
    msg = "0/3 nodes are available: 3 Insufficient memory. preemption: not helpful."
    c = derive(observed(deployment=deployment(ready=0), pods=[pending_pod(msg)]))
    assert c["Ready"]["reason"] == "InsufficientResources"


def test_terminating_pods_are_ignored():
    c = derive(observed(deployment=deployment(ready=0), pods=[pending_pod(INSUFFICIENT_GPU_MSG, terminating=True)]))
    assert c["Ready"]["reason"] == "ReplicasNotReady"


def test_invalid_spec_while_the_previous_spec_serves():
    c = derive(observed(deployment=deployment(replicas=2), invalid="spec.model.name: String should have at least 1 character"))
    ready = c["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.model.name: String should have at least 1 character")
    assert "previous spec keeps serving (2/2 ready)" in ready["message"]
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("False", "InvalidSpec")


def test_invalid_spec_with_nothing_deployed():
    c = derive(observed(invalid="spec is missing"))
    assert (c["Ready"]["reason"], c["Ready"]["message"]) == ("InvalidSpec", "spec is missing")


# --- Progressing, Degraded --------------------------------------------------------------------


def test_rollout_in_progress():
    dep = deployment(replicas=3, updated=1, available=2, ready=2)
    c = derive(observed(deployment=dep))
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "RollingOut")
    assert "1/3 replicas updated" in c["Progressing"]["message"]


def test_new_generation_not_yet_observed_is_progressing():
    c = derive(observed(deployment=deployment(generation=4, observed_generation=3)))
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "RollingOut")


def test_progress_deadline_exceeded():
    message = 'ReplicaSet "ranker-7c9d8b5f4" has timed out progressing.'
    dep = deployment(replicas=2, ready=1, updated=1, conditions=[
        k8s_condition("Available", "True", "MinimumReplicasAvailable"),
        k8s_condition("Progressing", "False", "ProgressDeadlineExceeded", message)])
    c = derive(observed(deployment=dep))
    assert (c["Progressing"]["status"], c["Progressing"]["reason"], c["Progressing"]["message"]) == (
        "False", "ProgressDeadlineExceeded", message)
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ProgressDeadlineExceeded")


def test_replica_failure_degrades():
    msg = 'pods "ranker-5d8f9c7b6d-" is forbidden: exceeded quota: gpu-quota'
    dep = deployment(replicas=2, ready=1, conditions=[
        k8s_condition("Available", "True", "MinimumReplicasAvailable"),
        k8s_condition("ReplicaFailure", "True", "FailedCreate", msg)])
    c = derive(observed(deployment=dep))
    assert (c["Degraded"]["status"], c["Degraded"]["reason"], c["Degraded"]["message"]) == (
        "True", "ReplicaFailure", msg)


def test_serving_but_a_scale_up_pod_is_stuck():
    dep = deployment(replicas=3, ready=2)
    c = derive(observed(deployment=dep, pods=[running_pod("a"), running_pod("b"), pending_pod(INSUFFICIENT_GPU_MSG)]))
    assert c["Ready"]["status"] == "True"
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "InsufficientGPU")


def test_failing_autoscaler_degrades():
    msg = ("the HPA was unable to compute the replica count: unable to get metric triton_queue_time_per_request_us: "
           "unable to fetch metrics from custom metrics API")
    c = derive(observed(deployment=deployment(), hpa=hpa("False", msg, reason="FailedGetPodsMetric")))
    degraded = c["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "AutoscalerFailing")
    assert msg in degraded["message"]
    assert c["Ready"]["status"] == "True"  # still serving at the current size


def test_working_autoscaler_is_fine():
    c = derive(observed(deployment=deployment(), hpa=hpa("True")))
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("False", "AsExpected")


# --- bookkeeping ------------------------------------------------------------------------------


SCENARIOS = {
    "serving": observed(deployment=deployment()),
    "nothing-yet": observed(),
    "invalid": observed(deployment=deployment(), invalid="spec is missing"),
    "stuck": observed(deployment=deployment(ready=0), pods=[pending_pod(INSUFFICIENT_GPU_MSG)]),
}


@pytest.mark.parametrize("obs", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_conditions_are_well_formed(obs):
    for c in derive_conditions(obs, [], T1):
        assert c["observedGeneration"] == obs.generation
        assert c["lastTransitionTime"] == T1
        assert c["reason"] and c["reason"][0].isupper() and c["reason"].isalnum()
        assert c["message"]
        Condition.model_validate(c)  # the shape the CRD's status schema accepts


def test_last_transition_time_kept_while_status_holds():
    before = derive_conditions(observed(deployment=deployment(replicas=2)), [], T0)
    # Same statuses, different message (3/3 instead of 2/2): the transition time stays.
    after = derive_conditions(observed(deployment=deployment(replicas=3)), before, T1)
    assert [c["lastTransitionTime"] for c in after] == [T0, T0, T0]
    assert after[0]["message"] != before[0]["message"]


def test_last_transition_time_moves_when_status_changes():
    before = derive_conditions(observed(deployment=deployment()), [], T0)
    stuck = observed(deployment=deployment(ready=0), pods=[pending_pod(INSUFFICIENT_GPU_MSG)])
    after = {c["type"]: c for c in derive_conditions(stuck, before, T1)}
    assert after["Ready"]["status"] == "False" and after["Ready"]["lastTransitionTime"] == T1
    assert after["Progressing"]["status"] == "True" and after["Progressing"]["lastTransitionTime"] == T1
    # Degraded did not change status (no pod serves, so nothing is degraded): its time stays.
    assert after["Degraded"]["status"] == "False" and after["Degraded"]["lastTransitionTime"] == T0


def test_transitions_reports_only_changes():
    serving = derive_conditions(observed(deployment=deployment()), [], T0)
    # healthy first conditions are not news, but serving is (a first status can already say so)
    assert [(c["type"], c["reason"]) for c in transitions([], serving)] == [("Ready", "Serving")]
    loading = derive_conditions(observed(deployment=deployment(ready=0)), [], T0)
    assert transitions([], loading) == []  # every new object starts with its replicas not ready
    stuck = derive_conditions(observed(deployment=deployment(ready=0), pods=[pending_pod(INSUFFICIENT_GPU_MSG)]),
                              [], T0)
    assert [(c["type"], c["reason"]) for c in transitions([], stuck)] == [("Ready", "InsufficientGPU")]
    lost = derive_conditions(observed(deployment=deployment(ready=0)), serving, T1)
    assert ("Ready", "ReplicasNotReady", "Warning") in \
        [(c["type"], c["reason"], event_type(c)) for c in transitions(serving, lost)]  # capacity lost later is news
    assert transitions(serving, derive_conditions(observed(deployment=deployment(replicas=3)), serving, T1)) == []
    failing = derive_conditions(observed(deployment=deployment(), hpa=hpa("False", "no metrics")), serving, T1)
    changed = transitions(serving, failing)
    assert [(c["type"], c["reason"]) for c in changed] == [("Degraded", "AutoscalerFailing")]


def test_a_rollout_that_makes_it_ready_is_one_event():
    # A new object's first replicas turn ready: Ready=True says so; its rollout's completion is not a second Event.
    loading = derive_conditions(observed(deployment=deployment(ready=0, updated=2)), [], T0)
    serving = derive_conditions(observed(deployment=deployment()), loading, T1)
    assert [(c["type"], c["reason"]) for c in transitions(loading, serving)] == [("Ready", "Serving")]
    # A rollout that completes while Ready stays True is its own Event.
    rolling = derive_conditions(observed(deployment=deployment(updated=1)), serving, T1)
    assert [(c["type"], c["reason"]) for c in transitions(serving, rolling)] == [("Progressing", "RollingOut")]
    assert [(c["type"], c["reason"]) for c in transitions(rolling, serving)] == [("Progressing", "RolloutComplete")]


def test_transitions_counts_a_reason_change():
    # Ready stays False, but the reason moves from loading to a scheduling problem: that is news.
    loading = derive_conditions(observed(deployment=deployment(ready=0)), [], T0)
    stuck = derive_conditions(observed(deployment=deployment(ready=0), pods=[pending_pod(INSUFFICIENT_GPU_MSG)]),
                              loading, T1)
    assert [(c["type"], c["reason"]) for c in transitions(loading, stuck)] == [("Ready", "InsufficientGPU")]


@pytest.mark.parametrize("ctype,status,reason,expected", [
    ("Ready", "True", "Serving", "Normal"),
    ("Ready", "False", "InsufficientGPU", "Warning"),
    ("Degraded", "False", "AsExpected", "Normal"),
    ("Degraded", "True", "AutoscalerFailing", "Warning"),
    ("Progressing", "True", "RollingOut", "Normal"),
    ("Progressing", "False", "RolloutComplete", "Normal"),
    ("Progressing", "False", "ProgressDeadlineExceeded", "Warning"),
    ("Progressing", "False", "InvalidSpec", "Warning"),
])
def test_event_type(ctype, status, reason, expected):
    assert event_type({"type": ctype, "status": status, "reason": reason}) == expected
