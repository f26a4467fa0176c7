"""The real metrics pipeline on the local control plane, end to end:

a real tritonserver (CPU, python backend) serving a tiny ONNX MLP --scrape 1 s--> Prometheus
(Debian 2.42) --> prometheus-adapter (built from its Go module) with the chart's rules
(charts/peakserve/files/adapter-rules.yaml) --> custom.metrics.k8s.io through the kube-apiserver's
aggregation layer --> the kube-controller-manager's real HPA controller.

Triton's metrics port is registered as a Prometheus target labelled with the namespace and the
name of a real (KWOK) pod of a Deployment, so the adapter attributes its metrics to that pod and
the HPA of that Deployment reads them. The values are checked against PromQL over the same window
and against Triton's own statistics, in the units the HPA targets use (µs, requests, 0..1).
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from peakserve.api.validation import parse_spec
from peakserve.loadgen import client
from peakserve.render.triton_config import render_config_pbtxt
from peakserve_harness.metrics.prometheus import ensure_installed as ensure_prometheus
from peakserve_harness.metrics.stack import GROUP, MetricsStack, parse_quantity
from peakserve_harness.triton.install import ensure_installed
from peakserve_harness.triton.python_backend import local_repository
from peakserve_harness.triton.server import LocalTriton

from .cluster import condition, wait_for

pytestmark = pytest.mark.timeout(240)

QUEUE = "triton_queue_time_per_request_us"
PENDING = "nv_inference_pending_request_count"
GPU = "nv_gpu_utilization"

MODEL = "mlp"
FEATURES = 13
MAX_QUEUE_DELAY_US = 50_000
SPEC = {
    "model": {
        "name": MODEL, "version": 1, "uri": f"pvc://model-store/{MODEL}/1", "format": "onnx",
        "maxBatchSize": 64,
        "inputs": [{"name": "x", "dataType": "FP32", "dims": [FEATURES]}],
        "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}],
    },
    # The dynamic batcher holds each batch up to 50 ms for more requests: a few concurrent
    # clients see tens of milliseconds of queue time per request, a known order of magnitude.
    "serving": {"instanceGroups": [{"kind": "GPU", "count": 1}],
                "dynamicBatching": {"maxQueueDelayMicroseconds": MAX_QUEUE_DELAY_US}},
}


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def stack(cluster, kubectl, tmp_path_factory):
    ensure_prometheus(log=lambda m: print(m, file=sys.stderr))  # `make tools` did it: a no-op
    s = MetricsStack(cluster, tmp_path_factory.mktemp("metrics"), log=lambda m: print(m, file=sys.stderr))
    s.start(timeout=90)
    yield s
    s.stop()


def _export_mlp(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).eval()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(mlp, (torch.zeros(2, FEATURES),), str(path), input_names=["x"],
                          output_names=["score"], dynamic_axes={"x": {0: "batch"}, "score": {0: "batch"}},
                          dynamo=False)


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    ensure_installed(log=lambda m: print(m, file=sys.stderr))
    root = tmp_path_factory.mktemp("triton")
    built = root / "built"
    (built / MODEL / "1").mkdir(parents=True)
    (built / MODEL / "config.pbtxt").write_text(render_config_pbtxt(parse_spec(SPEC)))
    _export_mlp(built / MODEL / "1" / "model.onnx")
    with LocalTriton(local_repository(built, root / "serving"), workdir=root / "server") as server:
        server.wait_ready(90)
        yield server


def _metrics_host_port(server: LocalTriton) -> str:
    return server.metrics_url.split("/")[2]


def _running_pod(kubectl, ns: str, selector: str) -> str:
    def running():
        pods = [p for p in kubectl.list("pods", ns, selector)
                if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        return pods[0]["metadata"]["name"] if pods else None
    return wait_for(running, timeout=60, what=f"a Running pod {selector} in {ns}")


def _raw(kubectl, path: str) -> dict:
    return json.loads(kubectl.run("get", "--raw", path).stdout)


def _served(kubectl, ns: str, metric: str, version: str = "v1beta1") -> dict[str, dict]:
    """{pod: item} from the custom metrics API, read through the real API server with kubectl;
    {} while the adapter has not discovered the metric yet (NotFound until its next relist)."""
    proc = kubectl.run("get", "--raw", f"/apis/{GROUP}/{version}/namespaces/{ns}/pods/*/{metric}", check=False)
    if proc.returncode != 0:
        assert "could not find the metric" in proc.stderr, proc.stderr
        return {}
    return {i["describedObject"]["name"]: i for i in json.loads(proc.stdout)["items"]}


def _served_value(kubectl, ns: str, pod: str, metric: str) -> float | None:
    proc = kubectl.run("get", "--raw", f"/apis/{GROUP}/v1beta1/namespaces/{ns}/pods/{pod}/{metric}", check=False)
    if proc.returncode != 0:
        return None
    items = json.loads(proc.stdout)["items"]
    return parse_quantity(items[0]["value"]) if items else None


def _queue_promql(ns: str, pod: str) -> str:
    """The rule's metricsQuery for one pod, written out by hand: the adapter must agree with it."""
    m = f'namespace="{ns}",pod="{pod}"'
    return (f"(sum by (pod) (rate(nv_inference_queue_duration_us{{{m}}}[30s])) / "
            f"(sum by (pod) (rate(nv_inference_request_success{{{m}}}[30s])) > 0)) "
            f"or (sum by (pod) (rate(nv_inference_request_success{{{m}}}[30s])) * 0)")


def _deployment(name: str, replicas: int = 1) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver"}]}}}}


class _Load:
    """``concurrency`` gRPC clients sending batch-1 requests back to back for ``seconds`` (bounded)."""

    def __init__(self, grpc_url: str, concurrency: int, seconds: float):
        self.grpc_url, self.concurrency, self.seconds = grpc_url, concurrency, seconds
        self.sent = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)]

    def _run(self, i: int) -> None:
        x = np.random.default_rng(i).normal(size=(1, FEATURES)).astype(np.float32)
        deadline = time.monotonic() + self.seconds
        try:
            while time.monotonic() < deadline:
                client.infer(self.grpc_url, MODEL, {"x": x}, ["score"], timeout_s=10)
                with self._lock:
                    self.sent += 1
        except BaseException as err:  # noqa: BLE001 - reported by join()
            self.errors.append(err)

    def start(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=self.seconds + 30)
        assert not any(t.is_alive() for t in self._threads), "load threads did not finish"
        assert not self.errors, self.errors


# ------------------------------------------------------------------------------------ tests

def test_stack_starts_fast_and_registers_the_custom_metrics_api(stack, kubectl):
    print(f"\nmetrics stack timings: {stack.timings}", file=sys.stderr)
    assert stack.timings["start_s"] < 20, stack.timings
    for version in ("v1beta1", "v1beta2"):
        svc = kubectl.get("apiservice", f"{version}.{GROUP}")
        assert condition(svc, "Available")["status"] == "True", svc["status"]
        assert svc["spec"]["service"] == {"name": "prometheus-adapter", "namespace": "custom-metrics",
                                          "port": stack.adapter.port}
        assert svc["spec"].get("caBundle") and not svc["spec"].get("insecureSkipTLSVerify")
        assert _raw(kubectl, f"/apis/{GROUP}/{version}")["groupVersion"] == f"{GROUP}/{version}"
    # the aggregator routes through an ExternalName Service: nothing needs a loopback Endpoint
    service = kubectl.get("service", "prometheus-adapter", "custom-metrics")
    assert service["spec"]["type"] == "ExternalName" and service["spec"]["externalName"] == "localhost"


def test_triton_metrics_reach_the_hpa_through_the_aggregation_layer(stack, triton, kubectl, ns):
    kubectl.apply({**_deployment("ranker"), "metadata": {"name": "ranker", "namespace": ns}})
    pod = _running_pod(kubectl, ns, "app=ranker")
    target = _metrics_host_port(triton)
    stack.set_targets([(target, {"namespace": ns, "pod": pod})])
    stack.prometheus.wait_scraped(target, timeout=30)

    # Discovered by the adapter's relist (2 s), then served per pod. Idle: 0 µs, not NaN (the
    # warmup request ran before the first scrape, so no request completed in the window).
    wait_for(lambda: {QUEUE, PENDING} <= stack.served_metrics(), timeout=30, what="the adapter to list the metrics")
    idle = wait_for(lambda: _served(kubectl, ns, QUEUE).get(pod), timeout=30, what=f"{QUEUE} of {pod}")
    assert idle["metricName"] == QUEUE and idle["describedObject"]["kind"] == "Pod"
    assert parse_quantity(idle["value"]) == 0, idle
    assert parse_quantity(_served(kubectl, ns, PENDING)[pod]["value"]) == 0

    # A real HPA on the Deployment, on the custom metric, with a tiny target: 1 µs per request.
    kubectl.apply({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "ranker", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ranker"},
                 "minReplicas": 1, "maxReplicas": 3,
                 "metrics": [{"type": "Pods", "pods": {"metric": {"name": QUEUE},
                                                       "target": {"type": "AverageValue", "averageValue": "1"}}}]}})
    hpa = wait_for(lambda: (h := kubectl.get("hpa", "ranker", ns))
                   and condition(h, "ScalingActive").get("status") == "True" and h, timeout=45,
                   what="the HPA to read the custom metric (ScalingActive=True)")
    assert condition(hpa, "ScalingActive")["reason"] == "ValidMetricFound"

    # A bounded burst: 4 clients back to back for 6 s, while we watch the pending gauge.
    before = client.model_stats(triton.http_url, MODEL)
    load = _Load(triton.grpc_url, concurrency=4, seconds=6).start()
    pending_seen = []
    while load.alive():
        value = _served_value(kubectl, ns, pod, PENDING)
        if value is not None:
            pending_seen.append(value)
        time.sleep(0.3)
    load.join()
    after = client.model_stats(triton.http_url, MODEL)
    burst_end = time.time()
    print(f"\nburst: {load.sent} requests; pending seen through the API: {pending_seen}", file=sys.stderr)
    assert load.sent >= 20
    # requests per pod, whole numbers, at most the number of clients, and seen > 0 under load
    assert pending_seen and max(pending_seen) > 0, pending_seen
    assert all(v == int(v) and 0 <= v <= 4 for v in pending_seen), pending_seen

    # Triton's own view of the burst: mean queue time per request, ns -> µs.
    requests = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    queue_ns = after["inference_stats"]["queue"]["ns"] - before["inference_stats"]["queue"]["ns"]
    assert requests == load.sent
    triton_us = queue_ns / 1000 / requests

    # Let the last samples of the burst be scraped, then read the adapter between two direct
    # PromQL evaluations of the same expression: while the 30 s window spans the whole burst the
    # ratio is steady, so all three agree.
    time.sleep(2.5)
    promql = _queue_promql(ns, pod)
    direct_before = stack.prometheus.query_value(promql)
    served = _served(kubectl, ns, QUEUE)[pod]
    direct_after = stack.prometheus.query_value(promql)
    value = parse_quantity(served["value"])
    print(f"queue time per request: adapter {served['value']} = {value:.0f} µs, PromQL {direct_before:.0f}"
          f"..{direct_after:.0f} µs, Triton statistics {triton_us:.0f} µs "
          f"({time.time() - burst_end:.1f}s after the burst)", file=sys.stderr)
    lo, hi = sorted((direct_before, direct_after))
    assert lo * 0.98 <= value <= hi * 1.02
    assert value == pytest.approx(triton_us, rel=0.15)
    # Units: µs. The batcher holds requests up to 50 ms, so the mean wait is milliseconds, i.e.
    # thousands of µs, and within a few times the 50 ms delay (a value in ms or s would fail).
    assert 1_000 < value < 5 * MAX_QUEUE_DELAY_US, value

    # The HPA controller read the same metric through the aggregation layer and wants more pods.
    def scaled():
        h = kubectl.get("hpa", "ranker", ns)
        metrics = (h.get("status") or {}).get("currentMetrics") or []
        return h if metrics and h["status"].get("desiredReplicas", 0) > 1 else None
    hpa = wait_for(scaled, timeout=45, interval=1, what="the HPA to scale up on the queue time")
    (current,) = hpa["status"]["currentMetrics"]
    assert current["type"] == "Pods" and current["pods"]["metric"]["name"] == QUEUE
    assert parse_quantity(current["pods"]["current"]["averageValue"]) > 1_000
    assert condition(hpa, "ScalingActive")["status"] == "True"
    assert condition(hpa, "AbleToScale")["status"] == "True"
    wait_for(lambda: kubectl.get("deployment", "ranker", ns)["spec"]["replicas"] > 1, timeout=30,
             what="the HPA to scale the Deployment")
    stack.set_targets([])


class _GpuExposition(http.server.BaseHTTPRequestHandler):
    """Triton on CPU exports no GPU metrics; this serves the two lines Triton would on two GPUs."""

    BODY = (b'# TYPE nv_gpu_utilization gauge\n'
            b'nv_gpu_utilization{gpu_uuid="GPU-0"} 0.75\n'
            b'nv_gpu_utilization{gpu_uuid="GPU-1"} 0.85\n')

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, *args):
        pass


def test_gpu_utilization_is_a_fraction_served_in_milli_units(stack, kubectl, ns):
    kubectl.apply({**_deployment("gpu"), "metadata": {"name": "gpu", "namespace": ns}})
    pod = _running_pod(kubectl, ns, "app=gpu")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GpuExposition)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = f"127.0.0.1:{server.server_address[1]}"
        stack.set_targets([(target, {"namespace": ns, "pod": pod})])
        stack.prometheus.wait_scraped(target, timeout=30)
        item = wait_for(lambda: _served(kubectl, ns, GPU, "v1beta2").get(pod), timeout=30,
                        what=f"{GPU} of {pod}")
        # the mean over the pod's GPUs, 0..1: 0.8 is served as 800m, which is what an HPA
        # target of 80% renders to (render/autoscaler.py)
        assert item["value"] == "800m" and parse_quantity(item["value"]) == pytest.approx(0.8)
    finally:
        stack.set_targets([])
        server.shutdown()
        server.server_close()


class _CounterExposition(http.server.BaseHTTPRequestHandler):
    """Triton's two counters growing at known rates: 12.5 requests/s that each spend 0.2 s in Triton, so
    2.5 requests are in flight on average (Little's law), on two models (split 10 + 2.5 requests/s)."""

    START = time.time()

    def do_GET(self):  # noqa: N802
        elapsed = time.time() - self.START
        lines = ["# TYPE nv_inference_request_success counter", "# TYPE nv_inference_request_duration_us counter"]
        for model, rate in (("a", 10.0), ("b", 2.5)):
            lines.append(f'nv_inference_request_success{{model="{model}",version="1"}} {rate * elapsed:.3f}')
            lines.append(f'nv_inference_request_duration_us{{model="{model}",version="1"}} '
                         f'{rate * 0.2e6 * elapsed:.3f}')
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_request_rate_and_requests_in_flight_are_served_per_pod_in_milli_units(stack, kubectl, ns):
    kubectl.apply({**_deployment("rate"), "metadata": {"name": "rate", "namespace": ns}})
    pod = _running_pod(kubectl, ns, "app=rate")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CounterExposition)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = f"127.0.0.1:{server.server_address[1]}"
        stack.set_targets([(target, {"namespace": ns, "pod": pod})])
        stack.prometheus.wait_scraped(target, timeout=30)
        seen: dict[str, list[str]] = {}

        def settled(metric: str, expected: float):
            """The served value once the 30 s rate() window is full of samples (until then rate() divides a
            few seconds' increase by the whole window and reads low)."""
            item = _served(kubectl, ns, metric).get(pod)
            if item:
                seen.setdefault(metric, []).append(item["value"])
            return item if item and parse_quantity(item["value"]) == pytest.approx(expected, rel=0.05) else None

        # requests/s summed over the pod's models (10 + 2.5): "12500m", as render/autoscaler.py's targets are written
        rate = wait_for(lambda: settled("triton_request_rate", 12.5), timeout=75, interval=1,
                        what=f"triton_request_rate of {pod} to be 12.5 requests/s")
        # requests in flight: 0.2 s x 12.5 requests/s = 2.5, not µs (2.5e6) nor per model
        flight = wait_for(lambda: settled("triton_requests_in_flight", 2.5), timeout=30, interval=1,
                          what=f"triton_requests_in_flight of {pod} to be 2.5")
        print(f"\nserved while the window filled: {seen}; settled at {rate['value']}, {flight['value']}",
              file=sys.stderr)
    finally:
        stack.set_targets([])
        server.shutdown()
        server.server_close()


def test_stop_unregisters_and_leaves_no_process(stack, kubectl):
    pids = [stack.prometheus.pid, stack.adapter.pid]
    stack.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for version in ("v1beta1", "v1beta2"):
        assert kubectl.get("apiservice", f"{version}.{GROUP}") is None
    # discovery is whole again (an orphaned APIService would break namespace deletion)
    assert kubectl.run("api-resources").returncode == 0
    stack.stop()  # idempotent; the fixture calls it once more
