"""A ModelDeployment served on the real node: the operator (a host process) renders the Triton Deployment,
the real kubelet runs the CPU Triton image on the built ranker artifact (a hostPath at /models/ranker/1),
and the pod's probes are really executed.

What it proves, against the kubelet and the runtime's own clocks:
- the startup probe holds while the model loads: the container runs with started=false and the pod unready
  until Triton has loaded the model and opened its HTTP port (the runtime's log timestamps);
- the pod turns Ready only after /v2/health/ready can answer, and no container restarts;
- through `kubectl port-forward` to the operator's Service (loopback), Triton answers an inference equal to
  onnxruntime's on the host, on the same published model.onnx and the same rows;
- the ModelDeployment reports Ready=True;
- with a promotion schedule and no leadTimeSeconds, status.autoscaling.measuredStartupSeconds is this pod's
  creation-to-Ready and leadTimeSeconds is derived from it (plus the metric pipeline delay, whole minutes).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http

from peakserve.api import schedules
from peakserve.api.spec import AutoscalingSpec
from peakserve.render import names
from peakserve_harness.realnode.layout import NODE_LABEL, NODE_TAINT
from peakserve_harness.sample_ranker import fp32_build_spec
from peakserve_harness.samples import model_deployment

from .kube_tools import (get_json, kubectl, parse_rfc3339, condition, port_forward, timestamped_logs,
                         wait_for, watch_pods)
from .triton_fixtures import built_ranker, operator_on_real_node, triton_image  # noqa: F401 fixtures

pytestmark = [pytest.mark.real_node, pytest.mark.timeout(1500)]

NS, NAME = "triton-real", "ranker"
ROWS = 16
READY_TIMEOUT = 300   # image snapshot, Triton start and model load on 2 shared cores
PROMOTION_IN = dt.timedelta(days=3)   # far enough that the floor stays at minReplicas during the test


def _figure(message: str) -> None:
    print(f"\n[realnode] {message}", file=sys.stderr, flush=True)


def _spec(image: str, version_dir: str, promotion_start: dt.datetime) -> dict:
    built = fp32_build_spec().model
    model = {"name": built.name, "uri": version_dir, "format": "onnx", "maxBatchSize": built.max_batch_size,
             "inputs": [t.model_dump(by_alias=True) for t in built.inputs],
             "outputs": [t.model_dump(by_alias=True) for t in built.outputs]}
    local = lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731
    return {
        "model": model,
        "serving": {
            "image": image, "imagePullPolicy": "Never", "gpus": 0,
            # No NVML in the image: a KIND_GPU group would fail to load.
            "instanceGroups": [{"kind": "CPU", "count": 1}],
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]},
            "tolerations": [{"key": NODE_TAINT[0], "operator": "Equal", "value": NODE_TAINT[1],
                             "effect": "NoSchedule"}],
            "startupTimeoutSeconds": 300,
        },
        # A schedule without leadTimeSeconds: the operator derives the lead from the pods' start times.
        # pendingRequests and no predictive floor: nothing to read from Prometheus (none runs here), and a
        # loopback address so that nothing would leave the machine anyway.
        "autoscaling": {
            "minReplicas": 1, "maxReplicas": 1, "engine": "hpa", "metric": "pendingRequests",
            "prometheusAddress": "http://127.0.0.1:9", "predictive": {"enabled": False},
            "capacity": {"learn": False},
            "schedules": [{"name": "flash-sale", "start": local(promotion_start),
                           "end": local(promotion_start + dt.timedelta(hours=2)), "timezone": "UTC",
                           "minReplicas": 1}],
        },
    }


def _running_unready(pod: dict) -> bool:
    status = next((c for c in (pod.get("status") or {}).get("containerStatuses") or [] if c["name"] == "triton"), {})
    return ("running" in (status.get("state") or {}) and status.get("started") is False
            and condition(pod, "Ready").get("status") != "True")


def _first(lines: list[tuple[dt.datetime, str]], needle: str) -> dt.datetime | None:
    return next((t for t, text in lines if needle in text), None)


def _infer(port: int, inputs: dict[str, np.ndarray]) -> np.ndarray:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60.0)
    try:
        requests = []
        for name, array in inputs.items():
            tensor = triton_http.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
            tensor.set_data_from_numpy(array)
            requests.append(tensor)
        result = client.infer(NAME, requests, outputs=[triton_http.InferRequestedOutput("score")])
        return result.as_numpy("score")
    finally:
        client.close()


def test_model_deployment_served_on_the_real_node(real_node, kubectl_argv, triton_image, built_ranker,
                                                  operator_on_real_node, tmp_path):
    promotion_start = (dt.datetime.now(dt.timezone.utc) + PROMOTION_IN).replace(microsecond=0, tzinfo=None)
    body = model_deployment(NAME, NS, _spec(triton_image.name, str(built_ranker.version_dir), promotion_start))
    selector = names.pod_selector(NAME)
    kubectl(kubectl_argv, "create", "namespace", NS)
    try:
        with watch_pods(kubectl_argv, NS, selector) as seen:
            applied = time.monotonic()
            kubectl(kubectl_argv, "apply", "-f", "-", stdin=json.dumps(body))

            def ready_pod():
                pods = get_json(kubectl_argv, "pods", "-n", NS, "-l", selector)["items"]
                return next((p for p in pods if condition(p, "Ready").get("status") == "True"), None)

            try:
                pod = wait_for(ready_pod, READY_TIMEOUT, interval=1.0, what="the Triton pod to be Ready on the real node")
            except AssertionError:
                events = kubectl(kubectl_argv, "get", "events", "-n", NS, check=False)
                raise AssertionError(f"{events}\noperator log:\n{operator_on_real_node.tail()}\n"
                                     f"kubelet log:\n{real_node.log_tail('kubelet')}") from None
            observed = time.monotonic() - applied
            time.sleep(1)   # the watch's copy of the Ready version
        arrivals = seen()
        versions = [obj for _, obj in arrivals]

        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == real_node.name
        triton = next(c for c in pod["spec"]["containers"] if c["name"] == "triton")
        assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert triton["image"] == triton_image.name

        # The startup probe held: the kubelet reported the container running but not started, pod unready.
        assert any(_running_unready(v) for v in versions), \
            f"never saw the container running but not started in {len(versions)} pod versions"
        created = parse_rfc3339(pod["metadata"]["creationTimestamp"])
        ready_at = parse_rfc3339(condition(pod, "Ready")["lastTransitionTime"])
        status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "triton")
        started_at = parse_rfc3339(status["state"]["running"]["startedAt"])
        logs = timestamped_logs(kubectl_argv, NS, name, "triton")
        loaded = _first(logs, f"successfully loaded '{NAME}'")
        http_up = _first(logs, "Started HTTPService")
        assert loaded and http_up, "Triton's log lacks the load or HTTP lines:\n" + \
            "\n".join(f"{t.isoformat()} {x}" for t, x in logs[-40:])
        # Ready only after /v2/health/ready could answer (the model loaded, the HTTP port open). The pod's
        # condition time is whole seconds (truncated), the log's is the runtime's, on the same clock.
        assert started_at <= loaded <= http_up
        assert ready_at >= http_up.replace(microsecond=0), (ready_at, http_up)
        # The same from the watch (the host's clock, as the runtime's): no version that arrived before the
        # HTTP port opened was Ready, and the kubelet published the held state while the model was loading.
        before_http = [v for t, v in arrivals if t < http_up.timestamp()]
        assert not any(condition(v, "Ready").get("status") == "True" for v in before_http)
        held_during_load = sum(_running_unready(v) for v in before_http)
        probe_failures = kubectl(kubectl_argv, "get", "events", "-n", NS, "--field-selector",
                                 f"involvedObject.name={name},reason=Unhealthy", "-o", "json")
        failed_probes = sum(e.get("count") or 1 for e in json.loads(probe_failures)["items"]
                            if "Startup probe failed" in e.get("message", ""))
        creation_to_ready = (ready_at - created).total_seconds()
        _figure(f"Triton pod creation-to-Ready {creation_to_ready:.0f}s by the pod's timestamps "
                f"({observed:.1f}s observed from apply); container started "
                f"{(started_at - created).total_seconds():.0f}s after creation, model loaded {(loaded - started_at).total_seconds():.1f}s and HTTP up "
                f"{(http_up - started_at).total_seconds():.1f}s after container start; "
                f"{failed_probes} failed startup probe(s); {held_during_load} running-but-not-started pod "
                f"version(s) published while the model loaded; image import {triton_image.import_seconds}s")

        # Traffic through the operator's Service, port-forwarded to loopback by the real kubelet.
        source = np.load(built_ranker.source / "evaluation.npz")
        inputs = {"sparse_ids": source["sparse_ids"][:ROWS].astype(np.int64),
                  "dense": source["dense"][:ROWS].astype(np.float32)}
        with port_forward(kubectl_argv, NS, f"service/{names.child_name(NAME)}", 8000,
                          tmp_path / "port-forward.log") as port:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10) as response:
                assert response.status == 200
            served = _infer(port, inputs)
        session = ort.InferenceSession(str(built_ranker.version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        expected = session.run(["score"], inputs)[0]
        assert served.shape == expected.shape == (ROWS, 1)
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
        _figure(f"inference through port-forward matches host onnxruntime on {ROWS} rows "
                f"(max |diff| {float(np.max(np.abs(served - expected))):.2e})")

        pod = get_json(kubectl_argv, "pod", "-n", NS, name)
        assert all(c["restartCount"] == 0 for c in pod["status"]["containerStatuses"]), pod["status"]

        # The ModelDeployment is Ready, and its lead time comes from this pod's creation-to-Ready.
        def md_status():
            md = get_json(kubectl_argv, "modeldeployment", "-n", NS, NAME)
            autoscaling = (md.get("status") or {}).get("autoscaling") or {}
            ready = condition(md, "Ready").get("status") == "True"
            return md["status"] if ready and autoscaling.get("measuredStartupSeconds") is not None else None

        status = wait_for(md_status, 60, interval=1.0, what="the ModelDeployment Ready with a measured startup")
        measured, lead = status["autoscaling"]["measuredStartupSeconds"], status["autoscaling"]["leadTimeSeconds"]
        assert measured == int(creation_to_ready)
        derived = schedules.lead_time(AutoscalingSpec.model_validate(body["spec"]["autoscaling"]), measured)
        assert lead == derived == -(-(measured + schedules.METRIC_PIPELINE_SECONDS) // 60) * 60
        raise_at = promotion_start.replace(tzinfo=dt.timezone.utc) - dt.timedelta(seconds=lead)
        assert status["autoscaling"]["nextChange"] == raise_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        _figure(f"status.autoscaling: measuredStartupSeconds={measured} (pod creation-to-Ready "
                f"{creation_to_ready:.0f}s) -> leadTimeSeconds={lead} (default without a measurement: "
                f"{schedules.DEFAULT_LEAD_SECONDS})")
    finally:
        kubectl(kubectl_argv, "delete", "namespace", NS, "--wait=true", "--timeout=120s", check=False, timeout=150)
