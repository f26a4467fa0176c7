"""Model builds on a real control plane: no rollout before a passed build, the serving version kept
when a build fails, one Job per build hash across operator restarts, and finished builds reused.

KWOK runs no containers, so each test runs the build pod itself on the host with the local build
runner (the same `peakserve build` command the builder image runs), at the moment it chooses.
That makes the order of events explicit: the test can look at the cluster while a build is running.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from peakserve_harness.pods.job_pods import BUILD_SELECTOR, run_pod
from peakserve_harness.samples import model_deployment
from peakserve.cluster.client import Kube

from .cluster import condition, wait_for

pytestmark = pytest.mark.integration

FACTORY = textwrap.dedent('''
    import torch

    def build_model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
''')


def write_tiny_source(src: Path, module_name: str = "tiny_factory") -> Path:
    """A tiny torch model (factory + state dict) with disjoint calibration and evaluation sets, in `src`."""
    import importlib.util

    import torch

    src.mkdir(parents=True, exist_ok=True)
    (src / "tiny.py").write_text(FACTORY)
    spec = importlib.util.spec_from_file_location(module_name, src / "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.build_model().state_dict(), src / "state_dict.pt")
    rng = np.random.default_rng(0)
    np.savez(src / "calibration.npz", x=rng.normal(size=(128, 8)).astype(np.float32))
    np.savez(src / "evaluation.npz", x=rng.normal(size=(256, 8)).astype(np.float32))
    return src


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_tiny_source(tmp_path_factory.mktemp("source"))


@pytest.fixture
def kube(cluster) -> Kube:
    return Kube.from_kubeconfig(cluster.kubeconfig)


def tiny(name: str, ns: str, source: Path, store: Path, **build) -> dict:
    spec = {
        "model": {"name": "tiny", "maxBatchSize": 32,
                  "inputs": [{"name": "x", "dataType": "FP32", "dims": [8]}],
                  "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]},
        "serving": {"gpus": 1, "gpuProduct": "NVIDIA-A10", "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                                                         "limits": {"memory": "1Gi"}}},
        "replicas": 2,
        "build": {"source": {"uri": str(source), "format": "pytorch", "file": "state_dict.pt",
                             "factory": "tiny.py:build_model"},
                  "candidates": ["int8Dynamic"], "batchSizes": [1, 32],
                  "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
                  "artifacts": {"uri": str(store)}, **build},
    }
    return model_deployment(name, ns, spec)


def build_pods(kube: Kube, ns: str) -> list[dict]:
    return [p for p in kube.list("v1", "Pod", ns, BUILD_SELECTOR) if p["status"].get("phase") == "Running"]


def run_next_build(kube: Kube, ns: str) -> int:
    """Wait for the build pod KWOK started, and run it on the host."""
    pod = wait_for(lambda: (build_pods(kube, ns) or [None])[0], timeout=60, what="a running build pod")
    return run_pod(kube, pod, timeout=600)


def status_of(kubectl, ns: str, name: str = "tiny") -> dict:
    return (kubectl.get("modeldeployment", name, ns) or {}).get("status") or {}


def serving_hash(kubectl, ns: str, name: str = "tiny") -> str | None:
    dep = kubectl.get("deployment", name, ns)
    return dep and dep["spec"]["template"]["metadata"]["annotations"].get("peakserve.io/build-hash")


def serve_first_build(kubectl, kube, ns, source, store, **build) -> dict:
    kubectl.apply(tiny("tiny", ns, source, store, **build))
    wait_for(lambda: condition(kubectl.get("modeldeployment", "tiny", ns), "BuildSucceeded").get("reason")
             == "Building", what="BuildSucceeded=Unknown (Building)")
    assert run_next_build(kube, ns) == 0
    return wait_for(lambda: (s := status_of(kubectl, ns)).get("build", {}).get("servingHash")
                    and condition({"status": s}, "Ready").get("status") == "True" and s,
                    timeout=60, what="the built model to serve")


def test_no_rollout_before_the_build_passes(kubectl, kube, operator, ns, source, tmp_path):
    kubectl.apply(tiny("tiny", ns, source, tmp_path / "store"))
    obj = wait_for(lambda: (o := kubectl.get("modeldeployment", "tiny", ns))
                   and condition(o, "BuildSucceeded").get("status") == "Unknown" and o, what="the build to start")
    wait_for(lambda: build_pods(kube, ns), what="the build pod")
    # The build is running: nothing serves yet, and status says why.
    assert kubectl.get("deployment", "tiny", ns) is None
    assert condition(obj, "Ready")["reason"] == "Building"
    assert condition(obj, "Progressing")["reason"] == "Building"
    jobs = kubectl.list("job", ns)
    assert len(jobs) == 1 and jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"

    assert run_next_build(kube, ns) == 0
    status = wait_for(lambda: (s := status_of(kubectl, ns)).get("readyReplicas") == 2 and s,
                      timeout=60, what="the built model to be served")
    build = status["build"]
    assert build["phase"] == "Succeeded" and build["servingHash"] == build["hash"]
    assert build["precision"] in ("int8", "fp32") and build["digest"].startswith("sha256:")
    assert condition({"status": status}, "BuildSucceeded")["status"] == "True"
    # Triton serves exactly the published artifact: STORE/HASH/MODEL/VERSION.
    published = tmp_path / "store" / build["hash"]
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["hash"] == build["hash"]
    dep = kubectl.get("deployment", "tiny", ns)
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-source")
    assert volume["hostPath"]["path"] == str(published / "tiny" / "1")
    assert (published / "tiny" / "1" / "model.onnx").is_file()


def test_a_failed_gate_keeps_the_serving_version(kubectl, kube, operator, ns, source, tmp_path):
    first = serve_first_build(kubectl, kube, ns, source, tmp_path / "store")
    old_hash = first["build"]["hash"]
    # An impossible gate and no fp32 fallback: the new build must fail, and nothing may roll out.
    kubectl.apply(tiny("tiny", ns, source, tmp_path / "store", allowFp32Fallback=False,
                       gates={"maxAbsDiff": 1e-12, "p99AbsDiff": 1e-12}, batchSizes=[1]))
    assert run_next_build(kube, ns) == 3
    status = wait_for(lambda: (s := status_of(kubectl, ns)).get("build", {}).get("phase") == "Failed" and s,
                      timeout=60, what="the failed build in status")
    assert status["build"]["reason"] == "GateFailed"
    assert "maxAbsDiff" in status["build"]["message"]
    built = condition({"status": status}, "BuildSucceeded")
    assert built["status"] == "False" and "keeps serving" in built["message"]
    degraded = wait_for(lambda: (c := condition(kubectl.get("modeldeployment", "tiny", ns), "Degraded"))
                        .get("status") == "True" and c, what="Degraded=True")
    assert degraded["reason"] == "GateFailed"
    assert condition({"status": status}, "Ready")["status"] == "True"
    assert serving_hash(kubectl, ns) == old_hash
    assert kubectl.get("deployment", "tiny", ns)["status"]["readyReplicas"] == 2
    job = kubectl.list("job", ns, f"peakserve.io/build-hash={status['build']['hash']}")[0]
    assert condition(job, "Failed")["reason"] == "PodFailurePolicy", "a failed gate is final: no retries"
    events = kubectl.list("event", ns)
    assert any(e["reason"] == "GateFailed" and e["type"] == "Warning" for e in events)


def test_one_job_per_build_across_restarts_and_reuse(kubectl, kube, operator, ns, source, tmp_path):
    first = serve_first_build(kubectl, kube, ns, source, tmp_path / "store")
    hash_a = first["build"]["hash"]
    kubectl.apply(tiny("tiny", ns, source, tmp_path / "store", batchSizes=[1, 16]))
    wait_for(lambda: len(kubectl.list("job", ns)) == 2, what="the second build Job")
    operator.restart()
    # Resume and several drift passes (every 3 s) later, the running build still has exactly one Job.
    wait_for(lambda: status_of(kubectl, ns).get("observedGeneration") == 2, what="generation 2 seen")
    import time
    time.sleep(8)
    assert len(kubectl.list("job", ns)) == 2
    assert run_next_build(kube, ns) == 0
    hash_b = wait_for(lambda: (h := serving_hash(kubectl, ns)) != hash_a and h, timeout=60, what="build B served")

    # Back to spec A: its finished build is reused, with no new Job and no build run.
    kubectl.apply(tiny("tiny", ns, source, tmp_path / "store"))
    wait_for(lambda: serving_hash(kubectl, ns) == hash_a, timeout=60, what="build A served again from cache")
    assert len(kubectl.list("job", ns)) == 2 and hash_b != hash_a
    assert build_pods(kube, ns) == []
