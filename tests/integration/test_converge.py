"""The operator against a real control plane: create, status, placement, events, deletion."""

from __future__ import annotations

import pytest

from .cluster import condition, md, wait_for

pytestmark = pytest.mark.integration


def ready(kubectl, name, ns, reason="Serving", replicas=None):
    """Ready has `reason`; with `replicas`, that many are also ready (Ready turns True at the first one)."""
    def check():
        obj = kubectl.get("modeldeployment", name, ns)
        if condition(obj, "Ready").get("reason") != reason:
            return None
        return obj if replicas is None or obj["status"].get("readyReplicas") == replicas else None
    return wait_for(check, what=f"{name} Ready reason {reason}" + (f", {replicas} ready" if replicas else ""))


def test_apply_converges_to_serving_on_gpu_nodes(kubectl, operator, ns):
    kubectl.apply(md("ranker", ns, replicas=2))
    obj = ready(kubectl, "ranker", ns, replicas=2)

    status = obj["status"]
    # No finalizer: deleting a ModelDeployment must never wait for the operator to be running.
    assert not obj["metadata"].get("finalizers")
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["readyReplicas"] == 2 and status["replicas"] == 2
    assert status["endpoint"] == {"http": f"http://ranker.{ns}.svc:8000", "grpc": f"ranker.{ns}.svc:8001"}
    for ctype in ("Ready", "Progressing", "Degraded"):
        c = condition(obj, ctype)
        assert c["observedGeneration"] == obj["metadata"]["generation"] and c["reason"] and c["message"]
    assert condition(obj, "Degraded")["status"] == "False"

    uid = obj["metadata"]["uid"]
    for kind in ("deployment", "service", "poddisruptionbudget", "configmap"):
        name = "ranker-triton-config" if kind == "configmap" else "ranker"
        child = kubectl.get(kind, name, ns)
        refs = child["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment", "name": "ranker",
                         "uid": uid, "controller": True, "blockOwnerDeletion": True}]
        managers = {m["manager"] for m in child["metadata"]["managedFields"] if m["operation"] == "Apply"}
        assert "peakserve" in managers

    # The scheduler placed the pods on A10 nodes only, and KWOK runs them.
    pods = kubectl.list("pods", ns, "peakserve.io/model-deployment=ranker")
    assert len(pods) == 2
    for pod in pods:
        node = kubectl.get("node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A10"
        assert pod["status"]["phase"] == "Running"

    printed = kubectl.run("get", "mdep", "ranker", "-n", ns).stdout
    assert printed.split("\n")[0].split()[:5] == ["NAME", "READY", "REPLICAS", "PRECISION", "MODEL"]
    assert printed.split("\n")[1].split()[:5] == ["ranker", "True", "2", "fp32", "ranker"]

    events = kubectl.list("events", ns)
    reasons = {(e["reason"], e["type"]) for e in events if e["involvedObject"]["kind"] == "ModelDeployment"}
    assert ("Serving", "Normal") in reasons


def test_gpu_product_selects_the_h100_node(kubectl, operator, ns):
    kubectl.apply(md("big", ns, serving={"gpus": 8, "gpuProduct": "NVIDIA-H100-80GB-HBM3"}))
    ready(kubectl, "big", ns)
    (pod,) = kubectl.list("pods", ns, "peakserve.io/model-deployment=big")
    assert pod["spec"]["nodeName"] == "gpu-h100-0"


def test_insufficient_gpus_are_reported_in_words_a_user_can_act_on(kubectl, operator, ns):
    kubectl.apply(md("xl", ns, serving={"gpus": 8}))  # A10 nodes have 4 GPUs each
    obj = ready(kubectl, "xl", ns, reason="InsufficientGPU")
    c = condition(obj, "Ready")
    assert c["status"] == "False"
    assert "no node with NVIDIA-A10 has 8 free nvidia.com/gpu" in c["message"]
    assert "Insufficient nvidia.com/gpu" in c["message"]  # the scheduler's own words are kept
    warnings = [e for e in kubectl.list("events", ns) if e["reason"] == "InsufficientGPU"]
    assert warnings and warnings[0]["type"] == "Warning"


def test_unknown_gpu_product_is_reported(kubectl, operator, ns):
    kubectl.apply(md("b200", ns, serving={"gpuProduct": "NVIDIA-B200"}))
    obj = ready(kubectl, "b200", ns, reason="GPUProductUnavailable")
    assert "nvidia.com/gpu.product=NVIDIA-B200" in condition(obj, "Ready")["message"]


def test_long_name_gets_valid_child_names(kubectl, operator, ns):
    name = "promo." + "singles-day-ranking-model-" * 8 + "v1"
    kubectl.apply(md(name, ns))
    obj = ready(kubectl, name, ns)
    (service,) = kubectl.list("services", ns)
    assert len(service["metadata"]["name"]) <= 63
    assert service["metadata"]["annotations"]["peakserve.io/model-deployment"] == name
    assert obj["status"]["endpoint"]["http"].startswith(f"http://{service['metadata']['name']}.")


def test_delete_cascades_to_children(kubectl, operator, ns):
    kubectl.apply(md("gone", ns))
    ready(kubectl, "gone", ns)
    kubectl.run("delete", "modeldeployment", "gone", "-n", ns)
    wait_for(lambda: not kubectl.list("deployments", ns) and not kubectl.list("services", ns)
             and not kubectl.list("configmaps", ns, "app.kubernetes.io/managed-by=peakserve"),
             what="garbage collection of the children")
    wait_for(lambda: not kubectl.list("pods", ns), what="pods to go")


def test_operator_metrics_and_liveness(kubectl, operator, ns):
    kubectl.apply(md("metered", ns))
    ready(kubectl, "metered", ns)
    samples = operator.metrics()
    assert samples['peakserve_reconcile_total{result="success"}'] >= 1
    assert samples["peakserve_reconcile_duration_seconds_count"] >= 1
    assert samples['peakserve_modeldeployments{ready="True"}'] >= 1
    assert "# TYPE peakserve_reconcile_errors_total counter" in operator.metrics_text()
    assert operator.healthy()


def test_kubectl_explain_describes_the_spec(kubectl):
    out = kubectl.run("explain", "modeldeployment.spec.serving.gpuProduct").stdout
    assert "nvidia.com/gpu.product" in out and "GPU feature discovery" in out
    out = kubectl.run("explain", "modeldeployment.spec.autoscaling.metric").stdout
    assert "queueTime" in out and "microseconds" in out
