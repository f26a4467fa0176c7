"""kind-config.yaml is a valid kind Cluster config, checked with kind's own Go types.

tests/linters/kindcheck is a small Go program that decodes the file strictly into
sigs.k8s.io/kind/pkg/apis/config/v1alpha4.Cluster, the way `kind create cluster --config` does,
and repeats kind's validation; it needs no Docker. Go is required by this project (`make tools`
builds the local control plane from Go modules), so a missing `go` fails these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KIND_CONFIG = ROOT / "kind-config.yaml"
KINDCHECK = ROOT / "tests" / "linters" / "kindcheck"
NODE_IMAGE = "kindest/node:v1.34.0"
GPU_LABELS = {"nvidia.com/gpu.product": "NVIDIA-A10", "nvidia.com/gpu.present": "true"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _go() -> str:
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", str(Path.home() / "go" / "bin" / "go")) if os.access(p, os.X_OK)),
        None)
    if go is None:
        pytest.fail("`go` was not found on PATH: Go is required to check kind-config.yaml with kind's "
                    "own types (tests/linters/kindcheck) and to build the local control plane; install Go "
                    "(https://go.dev/dl/) and re-run", pytrace=False)
    return go


def kindcheck(path: Path) -> subprocess.CompletedProcess[str]:
    """`go run . PATH` in tests/linters/kindcheck. The first run downloads the modules (through the Go
    module proxy) and compiles; later runs come from Go's build cache."""
    env = {**os.environ, "GOWORK": "off"}  # go.mod/go.sum are used as they are (-mod=readonly)
    return subprocess.run([_go(), "run", ".", str(path)], cwd=KINDCHECK, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(KIND_CONFIG.read_text())


def _worker(config: dict[str, Any]) -> dict[str, Any]:
    workers = [n for n in config["nodes"] if n.get("role") == "worker"]
    assert len(workers) == 1, "one worker"
    return workers[0]


@pytest.mark.timeout(330)
def test_kind_accepts_the_config():
    result = kindcheck(KIND_CONFIG)
    assert result.returncode == 0, f"kindcheck rejected kind-config.yaml:\n{result.stderr}{result.stdout}"
    assert 'valid kind.x-k8s.io/v1alpha4 Cluster "peakserve" with 2 nodes' in result.stdout


# Each broken copy must be rejected, with a message naming the problem: proof the check is strict.
BROKEN = {
    "unknown top-level field": (("nodes:", "nodez:"), "field nodez not found"),
    "unknown node field": (("    labels:", "    lables:"), "field lables not found"),
    "wrong apiVersion": (("kind.x-k8s.io/v1alpha4", "kind.x-k8s.io/v1alpha3"), "apiVersion"),
    "wrong kind": (("kind: Cluster", "kind: Clusters"), "kind is"),
    "port as a string": (("hostPort: 8000", "hostPort: eight-thousand"), "into int32"),
    "port out of range": (("hostPort: 8001", "hostPort: 80010"), "invalid port number: 80010"),
    "invalid node role": (("role: worker", "role: gpu-worker"), "not a valid node role"),
    "no control plane": (("role: control-plane", "role: worker"), "at least one control-plane"),
    "invalid taint effect": (("effect: NoSchedule", "effect: NoScheduled"), 'invalid effect "NoScheduled"'),
    "duplicate port mapping": (("hostPort: 8001", "hostPort: 8000"), "configured twice"),
}


@pytest.mark.timeout(330)
@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_kind_rejects_a_broken_copy(case, tmp_path):
    (old, new), message = BROKEN[case]
    text = KIND_CONFIG.read_text()
    assert text.count(old) >= 1, f"{old!r} not in kind-config.yaml: update this test"
    broken = tmp_path / "kind-config.yaml"
    broken.write_text(text.replace(old, new, 1))
    result = kindcheck(broken)
    assert result.returncode == 1, f"kindcheck accepted a broken config ({case}):\n{result.stdout}{result.stderr}"
    assert message in result.stderr, result.stderr


def test_nodes_and_pinned_images(config):
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    for node in config["nodes"]:
        image = node["image"]
        assert image == NODE_IMAGE or image.startswith(NODE_IMAGE + "@sha256:"), image


def test_worker_looks_like_a_gpu_node(config):
    worker = _worker(config)
    assert worker["labels"] == GPU_LABELS
    patches = [yaml.safe_load(p) for p in worker["kubeadmConfigPatches"]]
    joins = [p for p in patches if p["kind"] == "JoinConfiguration"]
    assert len(joins) == 1
    assert joins[0]["nodeRegistration"]["taints"] == [GPU_TAINT]
    # The control plane is neither labelled nor tainted like a GPU node.
    control_plane = config["nodes"][0]
    assert "labels" not in control_plane and "kubeadmConfigPatches" not in control_plane


def test_triton_ports_are_mapped_on_loopback(config):
    mappings = _worker(config)["extraPortMappings"]
    assert {(m["containerPort"], m["hostPort"]) for m in mappings} == {(30800, 8000), (30801, 8001)}
    assert all(m["listenAddress"] == "127.0.0.1" and m.get("protocol", "TCP") == "TCP" for m in mappings)
    assert "NodePort Service" in KIND_CONFIG.read_text(), "say that a NodePort Service is needed"


def test_top_comment_points_to_dev_up():
    head = KIND_CONFIG.read_text().split("\nkind: Cluster", 1)[0]
    assert "Docker" in head and "make dev-up" in head


def test_rendered_gpu_pods_fit_the_worker(render, config):
    """What the operator renders for an A10 deployment selects and tolerates the kind worker."""
    worker = _worker(config)
    pod = render({"serving": {"gpus": 1, "gpuProduct": "NVIDIA-A10"}})["Deployment"]["spec"]["template"]["spec"]
    assert all(worker["labels"].get(k) == v for k, v in pod["nodeSelector"].items())

    def tolerates(toleration: dict[str, Any], taint: dict[str, str]) -> bool:
        if toleration.get("effect") not in (None, "", taint["effect"]):
            return False
        if toleration.get("operator") == "Exists":
            return toleration.get("key") in (None, "", taint["key"])
        return toleration.get("key") == taint["key"] and toleration.get("value") == taint["value"]

    assert any(tolerates(t, GPU_TAINT) for t in pod["tolerations"]), pod["tolerations"]
