"""The closed loop, all real: load -> real tritonservers -> Prometheus -> prometheus-adapter -> the
aggregation layer -> the real HPA controller -> the Deployment peakserve rendered -> KWOK pods ->
more real tritonservers.

Behind every Triton pod that KWOK runs, PodServers starts a real tritonserver on loopback (and stops
it with the pod), labelled in Prometheus with the pod's namespace and name. The served model is an
ONNX MLP whose every batch also waits 20 ms, as a GPU kernel would (PEAKSERVE_SIMULATED_GPU_MS):
on 2 CPU cores, capacity then really grows with replicas. A bounded load generator spreads requests
over the live servers. Replicas must rise, the queue time fall back under the target, and replicas
fall again after the load stops and the scale-down window passes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from pathlib import Path

import pytest

from peakserve_harness.metrics.stack import MetricsStack
from peakserve_harness.pods.triton_pods import PodServers
from peakserve.cluster.client import Kube
from peakserve.loadgen import run_load
from peakserve.render.triton_config import render_config_pbtxt
from peakserve_harness.triton.install import ensure_installed
from peakserve_harness.triton.python_backend import local_repository
from peakserve.api.validation import parse_spec

from .cluster import md, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

TARGET_US = 50_000          # queue time per request the HPA aims at (the spec default)
GPU_MS = 20                 # simulated compute per batch: ~50 requests/s per replica without batching
# Open-loop traffic, as real users send it: 100 requests/s is twice what one replica serves, so its
# queue grows without bound; three replicas run at 67% with ~20 ms of queueing, under the target.
# (Closed-loop clients would pile up on the slowest server and never rebalance.)
RATE = 100
LOAD_SECONDS = 90


def spec_overrides() -> dict:
    return {
        "serving": {"dynamicBatching": {"enabled": False}, "instanceGroups": [{"kind": "GPU", "count": 1}]},
        "autoscaling": {"engine": "hpa", "minReplicas": 1, "maxReplicas": 4, "metric": "queueTime",
                        "target": TARGET_US,
                        # Fast enough for a test: a 30 s window instead of 300 s.
                        "scaleDown": {"stabilizationWindowSeconds": 30, "maxPercent": 100, "maxPods": 4,
                                      "periodSeconds": 15}},
    }


def build_repository(root: Path, spec_raw: dict) -> Path:
    """A built repository as the model builder lays it out, then its local (python backend) copy."""
    import torch

    built = root / "built" / "ranker" / "1"
    built.mkdir(parents=True)
    (built.parent / "config.pbtxt").write_text(render_config_pbtxt(parse_spec(spec_raw)))
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(13, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mlp, (torch.zeros(2, 13),), str(built / "model.onnx"), input_names=["dense"],
                          output_names=["score"], dynamic_axes={"dense": {0: "b"}, "score": {0: "b"}},
                          dynamo=False)
    return local_repository(root / "built", root / "serving")


def deployment_replicas(kubectl, ns) -> int:
    dep = kubectl.get("deployment", "ranker", ns)
    return int((dep or {}).get("spec", {}).get("replicas") or 0)


def queue_times(stack: MetricsStack, ns: str) -> dict[str, float]:
    values = stack.pod_metrics(ns, "triton_queue_time_per_request_us")
    print(f"[{time.strftime('%H:%M:%S')}] queue time per pod (us): {values}")
    return values


def test_replicas_follow_triton_queue_time(cluster, kubectl, operator, ns, tmp_path):
    ensure_installed(log=lambda m: None)
    body = md("ranker", ns, **spec_overrides())
    repository = build_repository(tmp_path, body["spec"])
    kube = Kube.from_kubeconfig(cluster.kubeconfig)
    with MetricsStack(cluster, tmp_path / "metrics", log=lambda m: None) as stack, \
            PodServers(kube, ns, "ranker", repository, tmp_path / "pods", stack.set_targets,
                       env={"PEAKSERVE_SIMULATED_GPU_MS": str(GPU_MS)}) as servers:
        kubectl.apply(body)
        wait_for(lambda: servers.count() == 1, timeout=60, what="a tritonserver behind the first pod")
        wait_for(lambda: "ScalingActive" in str(kubectl.get("hpa", "ranker", ns)), timeout=60, what="the HPA")

        result: dict = {}
        load = threading.Thread(target=lambda: result.update(load=asyncio.run(run_load(
            servers.grpc_endpoints, "ranker", mode="rate", rate=RATE,
            duration=LOAD_SECONDS, max_requests=RATE * LOAD_SECONDS, warmup=0)).to_dict()), daemon=True)
        started = time.monotonic()
        load.start()

        # Replicas rise: the HPA reads Triton's queue time through the adapter and scales up.
        wait_for(lambda: deployment_replicas(kubectl, ns) >= 3, timeout=75, interval=1,
                 what="the HPA to scale up on queue time")
        scaled_after = time.monotonic() - started
        wait_for(lambda: servers.count() >= 3, timeout=30, what="tritonservers behind the new pods")
        # The queue time falls back under the target once the new servers take their share.
        wait_for(lambda: (q := queue_times(stack, ns)) and max(q.values()) < TARGET_US, timeout=60, interval=2,
                 what="queue time back under the target")
        load.join(timeout=LOAD_SECONDS + 30)
        assert result["load"]["completed"] > 0 and result["load"]["errors"] <= result["load"]["completed"] * 0.05
        # Load gone: queue time 0, and after the 30 s window the HPA scales back down to the floor.
        wait_for(lambda: deployment_replicas(kubectl, ns) == 1, timeout=120, interval=2,
                 what="the HPA to scale down after the stabilization window")
        wait_for(lambda: servers.count() == 1, timeout=30, what="tritonservers stopped with their pods")
    print(f"scaled up after {scaled_after:.0f}s; load: {result['load']['throughput_rps']:.0f} req/s, "
          f"p99 {result['load']['latency_ms']['p99']:.0f} ms")
    assert scaled_after < 60
