"""Updates, drift, restarts and the hand-over of replicas to the HPA, on a real control plane."""

from __future__ import annotations

import pytest

from .cluster import condition, md, wait_for
from .test_converge import ready

pytestmark = pytest.mark.integration


def reconcile_count(operator) -> float:
    """Reconciles this operator process has finished, whatever their result."""
    return sum(v for k, v in operator.metrics().items() if k.startswith("peakserve_reconcile_total{"))


def _deployment(kubectl, ns, name="ranker"):
    return kubectl.get("deployment", name, ns)


def test_spec_change_rolls_out_without_a_surge_pod(kubectl, operator, ns):
    kubectl.apply(md("ranker", ns, replicas=2))
    ready(kubectl, "ranker", ns)
    kubectl.apply(md("ranker", ns, replicas=2, serving={"image": "nvcr.io/nvidia/tritonserver:25.11-py3"}))

    def rolled():
        dep = _deployment(kubectl, ns)
        obj = kubectl.get("modeldeployment", "ranker", ns)
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        done = condition(obj, "Progressing").get("reason") == "RolloutComplete"
        return image.endswith("25.11-py3") and done and obj["status"]["observedGeneration"] == 2
    wait_for(rolled, what="rollout of the new image")
    dep = _deployment(kubectl, ns)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert dep["status"]["updatedReplicas"] == 2


def test_drift_is_repaired(kubectl, operator, ns):
    kubectl.apply(md("ranker", ns))
    ready(kubectl, "ranker", ns)
    kubectl.run("delete", "service", "ranker", "-n", ns)
    kubectl.run("patch", "deployment", "ranker", "-n", ns, "--type=json", "-p",
                '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"evil:latest"}]')
    wait_for(lambda: kubectl.get("service", "ranker", ns), what="the Service to come back")
    wait_for(lambda: _deployment(kubectl, ns)["spec"]["template"]["spec"]["containers"][0]["image"]
             .startswith("nvcr.io/nvidia/tritonserver"), what="the image to be restored")


def test_autoscaling_takes_over_replicas_without_dropping_them(kubectl, operator, ns):
    kubectl.apply(md("ranker", ns, replicas=3))
    ready(kubectl, "ranker", ns)
    kubectl.apply(md("ranker", ns, replicas=3, autoscaling={"minReplicas": 2, "maxReplicas": 6}))
    hpa = wait_for(lambda: kubectl.get("hpa", "ranker", ns), what="the HPA")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 6
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300

    wait_for(lambda: kubectl.get("modeldeployment", "ranker", ns)["status"]["observedGeneration"] == 2)
    dep = _deployment(kubectl, ns)
    assert dep["spec"]["replicas"] == 3, "handing replicas to the HPA must not reset them"
    for entry in dep["metadata"]["managedFields"]:
        if entry["manager"] == "peakserve":
            assert "f:replicas" not in entry.get("fieldsV1", {}).get("f:spec", {})

    # Someone else (the HPA, here kubectl standing in for it) scales; the drift check must not undo it.
    kubectl.run("scale", "deployment", "ranker", "-n", ns, "--replicas=5")
    wait_for(lambda: kubectl.get("modeldeployment", "ranker", ns)["status"]["replicas"] == 5, what="5 replicas")
    before = reconcile_count(operator)
    wait_for(lambda: reconcile_count(operator) >= before + 2, timeout=30, what="two more reconciles (drift)")
    assert _deployment(kubectl, ns)["spec"]["replicas"] == 5

    # Autoscaling off again: the HPA goes, and spec.replicas is authoritative once more.
    kubectl.apply(md("ranker", ns, replicas=2))
    wait_for(lambda: kubectl.get("hpa", "ranker", ns) is None, what="the HPA to be removed")
    wait_for(lambda: _deployment(kubectl, ns)["spec"]["replicas"] == 2, what="replicas back to 2")


def test_operator_restart_changes_nothing(kubectl, operator, ns):
    kubectl.apply(md("ranker", ns, replicas=2))
    ready(kubectl, "ranker", ns)
    wait_for(lambda: condition(kubectl.get("modeldeployment", "ranker", ns), "Progressing").get("reason")
             == "RolloutComplete")

    def versions():
        out = {kind: kubectl.get(kind, name, ns)["metadata"]["resourceVersion"]
               for kind, name in (("deployment", "ranker"), ("service", "ranker"), ("pdb", "ranker"),
                                  ("configmap", "ranker-triton-config"))}
        out["status"] = kubectl.get("modeldeployment", "ranker", ns)["status"]
        return out

    before = versions()
    operator.restart()
    # The new process resumes every object, then drift-checks it: both must find nothing to change.
    wait_for(lambda: reconcile_count(operator) >= 2, timeout=30, what="resume and a drift check")
    assert versions() == before


def test_invalid_update_never_breaks_what_is_serving(kubectl, operator, ns):
    kubectl.apply(md("ranker", ns, replicas=2))
    ready(kubectl, "ranker", ns)
    template_before = _deployment(kubectl, ns)["spec"]["template"]

    # Valid for the CRD schema (affinity is free-form), invalid for a Pod: only the operator can tell.
    bad = md("ranker", ns, replicas=2, serving={
        "image": "nvcr.io/nvidia/tritonserver:25.11-py3",
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}})
    kubectl.apply(bad)
    obj = ready(kubectl, "ranker", ns, reason="InvalidSpec")
    c = condition(obj, "Ready")
    assert c["status"] == "False" and c["observedGeneration"] == 2
    assert "nodeSelectorTerms" in c["message"] and "previous spec keeps serving (2/2 ready)" in c["message"]
    assert condition(obj, "Progressing")["reason"] == "InvalidSpec"

    before = reconcile_count(operator)
    wait_for(lambda: reconcile_count(operator) >= before + 2, timeout=30, what="drift checks of the bad spec")
    dep = _deployment(kubectl, ns)
    assert dep["spec"]["template"] == template_before
    assert dep["status"]["readyReplicas"] == 2

    kubectl.apply(md("ranker", ns, replicas=2))  # fixed
    ready(kubectl, "ranker", ns)


def test_invalid_new_model_deployment_creates_nothing(kubectl, operator, ns):
    bad = md("ranker", ns, model={"maxBatchSize": 8}, serving={"dynamicBatching": {"preferredBatchSizes": [16]}})
    kubectl.apply(bad)
    obj = ready(kubectl, "ranker", ns, reason="InvalidSpec")
    assert "preferredBatchSizes [16] exceed spec.model.maxBatchSize 8" in condition(obj, "Ready")["message"]
    assert kubectl.list("deployments", ns) == [] and kubectl.list("services", ns) == []
    warnings = [e for e in kubectl.list("events", ns) if e["reason"] == "InvalidSpec"]
    assert warnings and warnings[0]["type"] == "Warning"
