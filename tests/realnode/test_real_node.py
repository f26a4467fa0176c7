"""Smoke test of the real node: it registers Ready with this machine's capacity (and fake GPUs from a
device plugin), and a pod on it really runs: its readiness (httpGet) and liveness (exec) probes are
executed, its cgroup limit is applied, its fake GPU is allocated, and `kubectl logs` and `kubectl exec`
reach it through the apiserver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime

import pytest

from peakserve_harness.controlplane import versions
from peakserve.api.spec import GPU_PRODUCT_LABEL
from peakserve_harness.realnode import binaries
from peakserve_harness.realnode.fake_gpu_plugin import FAKE_GPU_LABEL, RESOURCE
from peakserve_harness.realnode.layout import NODE_LABEL, NODE_TAINT

pytestmark = [pytest.mark.real_node, pytest.mark.timeout(1200)]

POD = "smoke"
MEMORY_LIMIT = 64 * 1024 * 1024


def _kubectl(argv: list[str], *args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run([*argv, *args], input=stdin, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def _memtotal_bytes() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def _quantity_bytes(q: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(q[:-2]) * factor
    return int(q)


def test_node_registers_ready_with_real_capacity(real_node, kubectl_argv):
    node = json.loads(_kubectl(kubectl_argv, "get", "node", real_node.name, "-o", "json"))
    assert node["metadata"]["labels"][NODE_LABEL[0]] == NODE_LABEL[1]
    assert {"key": NODE_TAINT[0], "value": NODE_TAINT[1], "effect": "NoSchedule"} in node["spec"]["taints"]
    capacity = node["status"]["capacity"]
    assert capacity["cpu"] == str(os.cpu_count())
    assert abs(_quantity_bytes(capacity["memory"]) - _memtotal_bytes()) < 0.05 * _memtotal_bytes()
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == versions.KUBERNETES
    assert info["containerRuntimeVersion"] == f"containerd://{binaries.CONTAINERD.lstrip('v')}"
    assert {"type": "InternalIP", "address": real_node.layout.node_ip} in node["status"]["addresses"]
    # GPUs from the real device-plugin API, with no hardware: labelled fake, never given a product.
    assert capacity[RESOURCE] == node["status"]["allocatable"][RESOURCE] == str(real_node.fake_gpus) != "0"
    assert node["metadata"]["labels"][FAKE_GPU_LABEL[0]] == FAKE_GPU_LABEL[1]
    assert GPU_PRODUCT_LABEL not in node["metadata"]["labels"]
    print(f"\n[realnode] node Ready in {real_node.ready_seconds:.1f}s; capacity cpu={capacity['cpu']} "
          f"memory={capacity['memory']}; cold builds {real_node.build_seconds}", file=sys.stderr)


def _pod(image: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": "default"},
        "spec": {
            "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]},
            "tolerations": [{"key": NODE_TAINT[0], "operator": "Exists", "effect": "NoSchedule"}],
            # busybox as PID 1 ignores SIGTERM: do not wait the default 30 s on delete.
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", "echo hello-from-real-node; exec httpd -f -p 8080 -h /www"],
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
                "livenessProbe": {"exec": {"command": ["cat", "/www/index.html"]}, "periodSeconds": 2},
                "resources": {"limits": {"cpu": "200m", "memory": "64Mi", RESOURCE: "1"}},
            }],
        },
    }


def _ready_at(pod: dict) -> str | None:
    for c in pod.get("status", {}).get("conditions", []):
        if c["type"] == "Ready" and c["status"] == "True":
            return c["lastTransitionTime"]
    return None


def test_pod_runs_with_probes_logs_exec_and_limits(real_node, busybox_image, kubectl_argv):
    started = time.monotonic()
    _kubectl(kubectl_argv, "apply", "-f", "-", stdin=json.dumps(_pod(busybox_image)))
    try:
        deadline = time.monotonic() + 120
        pod: dict = {}
        while time.monotonic() < deadline:
            pod = json.loads(_kubectl(kubectl_argv, "get", "pod", POD, "-o", "json"))
            if _ready_at(pod):
                break
            time.sleep(0.5)
        observed = time.monotonic() - started
        events = _kubectl(kubectl_argv, "get", "events", "--field-selector", f"involvedObject.name={POD}",
                          check=False)
        assert _ready_at(pod), f"pod not Ready after 120s: {json.dumps(pod.get('status'), indent=1)}\n{events}"
        assert pod["spec"]["nodeName"] == real_node.name
        created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        ready = datetime.fromisoformat(_ready_at(pod).replace("Z", "+00:00"))
        print(f"\n[realnode] pod creation-to-Ready {observed:.1f}s observed "
              f"({(ready - created).total_seconds():.0f}s by the pod's timestamps)", file=sys.stderr)
        assert pod["status"]["podIP"].startswith("10.214.0.")

        assert "hello-from-real-node" in _kubectl(kubectl_argv, "logs", POD)
        assert _kubectl(kubectl_argv, "exec", POD, "--", "cat", "/www/index.html").strip() == "ok"
        limit = _kubectl(kubectl_argv, "exec", POD, "--", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert int(limit) == MEMORY_LIMIT
        # The device plugin's Allocate answered: its environment reached the container.
        env = _kubectl(kubectl_argv, "exec", POD, "--", "env")
        assert "PEAKSERVE_FAKE_GPU=true" in env and "NVIDIA_VISIBLE_DEVICES=fake-gpu-" in env
        # The liveness probe ran and passed: no restart.
        time.sleep(3)
        pod = json.loads(_kubectl(kubectl_argv, "get", "pod", POD, "-o", "json"))
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    finally:
        _kubectl(kubectl_argv, "delete", "pod", POD, "--wait=true", "--timeout=60s", check=False)
