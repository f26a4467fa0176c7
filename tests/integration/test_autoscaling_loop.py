"""The closed loop, all real: load -> real tritonservers -> Prometheus -> prometheus-adapter -> the
aggregation layer -> the real HPA controller -> the Deployment peakserve rendered -> KWOK pods ->
more real tritonservers.

Behind every Triton pod that KWOK runs, PodServers starts a real tritonserver on loopback (and stops
it with the pod), labelled in Prometheus with the pod's namespace and name. The served model is an
ONNX MLP whose every batch also waits 20 ms, as a GPU kernel would (PEAKSERVE_SIMULATED_GPU_MS):
on 2 CPU cores, capacity then really grows with replicas. A bounded load generator spreads requests
over the live servers. Replicas must rise, the queue time fall back under the target, and replicas
fall again after the load stops and the scale-down window passes.

The comparison then runs one bounded load step (20 -> 100 requests/s, open loop) against the same model
twice, one after the other: scaled on queue time (target 50 ms), then on request rate (70% of the stated
capacity, 50 requests/s per replica). It records, for each: pod-seconds used (the Deployment's replicas
sampled every second), the time from the step to enough replicas (ceil(100 / 50) = 2), the p99 latency
of the step, and how often the replica count changed direction while the load held steady. With
PEAKSERVE_LOOP_FIGURES=FILE they are written there as JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
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

pytestmark = [pytest.mark.integration, pytest.mark.autoscaling_loop, pytest.mark.timeout(420)]

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


# ---------------------------------------------------------------------------- queueTime vs requestRate
CAPACITY_RPS = 50           # stated: 20 ms per request, one instance, no batching (PEAKSERVE_SIMULATED_GPU_MS)
UTILIZATION = 70            # requestRate aims each pod at 70% of that: 35 requests/s
STEP_LOW, STEP_HIGH = 20, 100   # requests/s before and after the step
LOW_SECONDS, HIGH_SECONDS = 15, 80
STEADY_SECONDS = 40         # the end of the high part, where the load holds steady
ENOUGH = math.ceil(STEP_HIGH / CAPACITY_RPS)
FIGURES: dict[str, dict] = {}


def compared_overrides(metric: str, prometheus_url: str) -> dict:
    """The same model, bounds and scale-down policy; only the signal differs."""
    body = spec_overrides()
    scaling = body["autoscaling"]
    if metric == "requestRate":
        del scaling["target"]
        scaling.update({"metric": "requestRate", "targetUtilization": UTILIZATION,
                        "capacity": {"requestsPerSecond": CAPACITY_RPS, "learn": False},
                        "prometheusAddress": prometheus_url, "predictive": {"enabled": False}})
    return body


def record_figures(name: str, figures: dict) -> None:
    FIGURES[name] = figures
    target = os.environ.get("PEAKSERVE_LOOP_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def direction_changes(values: list[int]) -> int:
    """How often a series turns from rising to falling or back (equal neighbours ignored)."""
    steps = [b - a for a, b in zip(values, values[1:]) if b != a]
    return sum(1 for a, b in zip(steps, steps[1:]) if (a > 0) != (b > 0))


def sample_replicas(kube: Kube, ns: str, servers: PodServers, stop: threading.Event,
                    out: list[tuple[float, int, int]]) -> None:
    """(monotonic time, Deployment spec.replicas, tritonservers running) every second until stop."""
    while not stop.is_set():
        try:
            dep = kube.get("apps/v1", "Deployment", ns, "ranker") or {}
            out.append((time.monotonic(), int(dep.get("spec", {}).get("replicas") or 0), servers.count()))
        except Exception as err:  # noqa: BLE001 - a missed sample is a gap, not a failure
            print(f"replica sample failed: {err}")
        stop.wait(1.0)


def step_figures(samples: list[tuple[float, int, int]], t0: float, step_at: float, end: float,
                 high: dict) -> dict:
    in_run = [s for s in samples if t0 <= s[0] <= end]
    pod_seconds = sum(a[1] * (b[0] - a[0]) for a, b in zip(in_run, in_run[1:]))
    after = [s for s in in_run if s[0] >= step_at]
    enough = next((s[0] - step_at for s in after if s[1] >= ENOUGH), None)
    serving = next((s[0] - step_at for s in after if s[2] >= ENOUGH), None)
    steady = [s[1] for s in after if s[0] >= end - STEADY_SECONDS]
    changes: list[list[float]] = []
    for t, replicas, _ in in_run:
        if not changes or changes[-1][1] != replicas:
            changes.append([round(t - step_at, 1), replicas])
    return {
        "pod_seconds": round(pod_seconds, 1),
        "seconds_to_enough_replicas": enough and round(enough, 1),
        "seconds_to_enough_servers": serving and round(serving, 1),
        "p99_ms": round(high["latency_ms"]["p99"], 1),
        "p50_ms": round(high["latency_ms"]["p50"], 1),
        "throughput_rps": round(high["throughput_rps"], 1),
        "errors": high["errors"], "dropped": high.get("dropped", 0), "completed": high["completed"],
        "steady_direction_changes": direction_changes(steady),
        "steady_replica_changes": sum(1 for a, b in zip(steady, steady[1:]) if a != b),
        "steady_replicas": sorted(set(steady)),
        "max_replicas": max((s[1] for s in in_run), default=0),
        "replica_changes": changes,          # [seconds after the step, replicas]
    }


def run_step(kubectl, kube: Kube, sampler_kube: Kube, ns: str, stack: MetricsStack, repository: Path,
             workdir: Path, overrides: dict) -> dict:
    """Apply the object, run the step LOW -> HIGH, sample replicas throughout, delete the object."""
    body = md("ranker", ns, **overrides)
    with PodServers(kube, ns, "ranker", repository, workdir, stack.set_targets,
                    env={"PEAKSERVE_SIMULATED_GPU_MS": str(GPU_MS)}) as servers:
        kubectl.apply(body)
        wait_for(lambda: servers.count() == 1, timeout=60, what="a tritonserver behind the first pod")
        wait_for(lambda: condition_true(kubectl.get("hpa", "ranker", ns), "ScalingActive"),
                 timeout=60, what="the HPA reading its metric")
        samples: list[tuple[float, int, int]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_replicas, args=(sampler_kube, ns, servers, stop, samples),
                                   daemon=True)
        marks: dict = {}

        def drive() -> None:
            def load(rate: int, seconds: int) -> dict:
                return asyncio.run(run_load(servers.grpc_endpoints, "ranker", mode="rate", rate=rate,
                                            duration=seconds, max_requests=rate * seconds, warmup=0)).to_dict(
                                                series=False)
            marks["low"] = load(STEP_LOW, LOW_SECONDS)
            marks["step_at"] = time.monotonic()
            marks["high"] = load(STEP_HIGH, HIGH_SECONDS)
            marks["end"] = time.monotonic()

        sampler.start()
        t0 = time.monotonic()
        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        driver.join(timeout=LOW_SECONDS + HIGH_SECONDS + 60)
        stop.set()
        sampler.join(timeout=10)
        assert "end" in marks, "the load step did not finish in time"
        kubectl.run("delete", "modeldeployment", "ranker", "-n", ns, "--wait=true", "--timeout=60s")
        # Its pods go with it, and with them their GPUs, before the next run schedules.
        wait_for(lambda: not kubectl.list("pods", ns), timeout=60, what="the pods gone with the object")
    return step_figures(samples, t0, marks["step_at"], marks["end"], marks["high"])


def condition_true(obj: dict | None, ctype: str) -> bool:
    return any(c["type"] == ctype and c["status"] == "True"
               for c in ((obj or {}).get("status") or {}).get("conditions") or [])


def test_request_rate_and_queue_time_on_the_same_step(cluster, kubectl, operator, ns, tmp_path):
    """The same step against both signals, one after the other; a table of what each cost and did."""
    ensure_installed(log=lambda m: None)
    repository = build_repository(tmp_path, md("ranker", ns, **spec_overrides())["spec"])
    kube, sampler_kube = Kube.from_kubeconfig(cluster.kubeconfig), Kube.from_kubeconfig(cluster.kubeconfig)
    with MetricsStack(cluster, tmp_path / "metrics", log=lambda m: None) as stack:
        for metric in ("queueTime", "requestRate"):
            record_figures(metric, run_step(kubectl, kube, sampler_kube, ns, stack, repository, tmp_path / metric,
                                            compared_overrides(metric, stack.prometheus.url)))
    columns = ("pod_seconds", "seconds_to_enough_replicas", "seconds_to_enough_servers", "p99_ms",
               "throughput_rps", "errors", "steady_direction_changes", "steady_replica_changes", "steady_replicas", "max_replicas")
    print(f"\nstep {STEP_LOW} -> {STEP_HIGH} req/s ({LOW_SECONDS} s + {HIGH_SECONDS} s, steady: last "
          f"{STEADY_SECONDS} s), enough = {ENOUGH} replicas")
    print(f"{'':28}" + "".join(f"{m:>14}" for m in FIGURES))
    for col in columns:
        print(f"{col:28}" + "".join(f"{str(FIGURES[m][col]):>14}" for m in FIGURES))
    for metric, figures in FIGURES.items():
        print(f"{metric} replicas [s after step, n]: {figures['replica_changes']}")
        assert figures["seconds_to_enough_replicas"] is not None, f"{metric} never reached {ENOUGH} replicas"
        assert figures["completed"] > 0
    qt, rr = FIGURES["queueTime"], FIGURES["requestRate"]
    # Noisy 2-core machine: no tight timings; only that the proportional signal does not flap more.
    assert rr["steady_direction_changes"] <= max(qt["steady_direction_changes"], 2), (qt, rr)
