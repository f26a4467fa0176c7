"""The harness as a kubelet for Triton pods on probed nodes, the job runner for analysis pods, and the
Gateway API CRDs from their Go module, all against the real control plane (no operator here).

A Deployment of one Triton pod, written the way peakserve renders it (the ConfigMap's config.pbtxt at
/models/NAME/config.pbtxt, the model version from a hostPath at /models/NAME/1), that tolerates and
selects the probed nodes: KWOK gives it a 127.80.x.y pod IP and leaves it unready; the pod agent
(ProbedPods) starts a real tritonserver on that IP and turns the pod Ready exactly when the server is
ready. The pod then answers a real inference at PODIP:8000, Prometheus targets name it, and its
server stops with it. A pod whose model cannot load never turns Ready and says why, like a kubelet.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from peakserve.api.validation import parse_spec
from peakserve.cluster.client import Kube
from peakserve.loadgen import client
from peakserve.render.names import ANALYSIS_COMPONENT
from peakserve.render.triton_config import render_config_pbtxt
from peakserve_harness.controlplane import gateway_api
from peakserve_harness.controlplane.nodes import PROBED_LABEL, probed_toleration
from peakserve_harness.loopback import DIRECT
from peakserve_harness.pods.job_pods import ANALYSIS_SELECTOR, run_job_pods
from peakserve_harness.pods.probed_pods import ProbedPods
from peakserve_harness.samples import small_spec
from peakserve_harness.triton.install import ensure_installed

from .cluster import condition, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.real_pods, pytest.mark.timeout(240)]

MODEL = "ranker"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def spec() -> dict:
    """The ModelDeployment spec whose pods land on probed nodes (validated like the operator would)."""
    body = small_spec(cpu="1", memory="1Gi")
    body["serving"].update({"nodeSelector": {PROBED_LABEL: "true"}, "tolerations": [probed_toleration()]})
    return body


def export_model(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(13, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mlp, (torch.zeros(2, 13),), str(path), input_names=["dense"], output_names=["score"],
                          dynamic_axes={"dense": {0: "b"}, "score": {0: "b"}}, dynamo=False)


def triton_objects(name: str, ns: str, version_dir: Path) -> list[dict]:
    """A ConfigMap and a Deployment of one Triton pod, laid out like peakserve's rendering."""
    parsed = parse_spec(spec())
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-triton-config", "namespace": ns},
                  "data": {"config.pbtxt": render_config_pbtxt(parsed)}}
    labels = {"app": name}
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3}
    pod = {
        "containers": [{
            "name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3", "command": ["tritonserver"],
            "args": ["--model-repository=/models", "--model-control-mode=none", "--strict-readiness=true",
                     "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"],
            "ports": [{"name": "http", "containerPort": 8000}, {"name": "grpc", "containerPort": 8001},
                      {"name": "metrics", "containerPort": 8002}],
            "resources": {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1},
                          "limits": {"memory": "1Gi", "nvidia.com/gpu": 1}},
            "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
            "readinessProbe": probe,
            "volumeMounts": [{"name": "models", "mountPath": "/models"},
                             {"name": "model-source", "mountPath": f"/models/{MODEL}/1", "readOnly": True},
                             {"name": "triton-config", "mountPath": f"/models/{MODEL}/config.pbtxt",
                              "subPath": "config.pbtxt", "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "models", "emptyDir": {}},
                    {"name": "model-source", "hostPath": {"path": str(version_dir), "type": "Directory"}},
                    {"name": "triton-config", "configMap": {"name": f"{name}-triton-config"}},
                    {"name": "tmp", "emptyDir": {}}],
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A10", **parsed.serving.node_selector},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        *[t.model_dump(by_alias=True, exclude_none=True) for t in parsed.serving.tolerations]],
        "terminationGracePeriodSeconds": 0,
    }
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                           "template": {"metadata": {"labels": labels}, "spec": pod}}}
    return [config_map, deployment]


def running_pods(kubectl, ns: str, app: str) -> list[dict]:
    return [p for p in kubectl.list("pod", ns, f"app={app}")
            if p["status"].get("phase") == "Running" and p["status"].get("podIP")
            and not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict) -> bool:
    return condition(pod, "Ready").get("status") == "True"


def health_ready(ip: str) -> bool:
    try:
        with DIRECT.open(f"http://{ip}:8000/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def triton():
    ensure_installed(log=lambda m: print(m, file=sys.stderr))


@pytest.fixture
def kube(cluster) -> Kube:
    return Kube.from_kubeconfig(cluster.kubeconfig)


class Targets:
    """What the agent publishes to Prometheus, as MetricsStack.set_targets would receive it."""

    def __init__(self):
        self.last: list = []

    def __call__(self, targets):
        self.last = list(targets)


def test_pod_turns_ready_when_its_tritonserver_is_ready_serves_on_its_ip_and_stops_with_it(
        cluster, kubectl, kube, ns, tmp_path, triton):
    version_dir = tmp_path / "store" / MODEL / "1"
    export_model(version_dir / "model.onnx")
    kubectl.apply(triton_objects("ranker", ns, version_dir))

    # KWOK alone: Running on a probed node with a loopback pod IP, but not Ready (nobody probed it).
    pod = wait_for(lambda: (running_pods(kubectl, ns, "ranker") or [None])[0], what="a running pod")
    ip, name = pod["status"]["podIP"], pod["metadata"]["name"]
    assert pod["spec"]["nodeName"].startswith("gpu-probed-")
    # From the node's loopback podCIDR (127.80.x.0/24 for the first cluster on this host), never its .0.
    pod_cidr = ipaddress.ip_network(kubectl.get("node", pod["spec"]["nodeName"])["spec"]["podCIDR"])
    assert pod_cidr.subnet_of(LOOPBACK) and ipaddress.ip_address(ip) in pod_cidr and not ip.endswith(".0"), ip
    time.sleep(1.5)
    pod = kubectl.get("pod", name, ns)
    assert not ready(pod) and condition(pod, "Ready")["reason"] == "ContainersNotReady"
    assert pod["status"]["containerStatuses"][0]["ready"] is False

    targets = Targets()
    started = time.monotonic()
    with ProbedPods(kube, tmp_path / "agent", namespace=ns, on_targets=targets) as agent:
        # Ready only once the real server on the pod IP is: sample both until the pod turns Ready.
        while True:
            pod = kubectl.get("pod", name, ns)
            if ready(pod):
                break
            assert time.monotonic() - started < 90, f"pod never turned Ready: {agent.states(ns)}"
            time.sleep(0.2)
        became_ready = time.monotonic() - started
        assert health_ready(ip), "the pod is Ready but its server does not answer /v2/health/ready"
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] is True and status["started"] is True and status["restartCount"] == 0
        assert condition(pod, "ContainersReady")["status"] == "True"
        server = agent.server(ns, name)
        assert server is not None and server.http_address == f"{ip}:8000"
        assert agent.http_endpoints(ns, "app=ranker") == [f"{ip}:8000"]
        assert agent.grpc_endpoints(ns, "app=other") == []

        # A real inference at PODIP:8000 (HTTP) and PODIP:8001 (gRPC).
        dense = np.random.default_rng(0).normal(size=(4, 13)).astype(np.float32)
        over_http = client.infer(f"http://{ip}:8000", MODEL, {"dense": dense}, ["score"])["score"]
        over_grpc = client.infer(f"{ip}:8001", MODEL, {"dense": dense}, ["score"])["score"]
        assert over_http.shape == (4, 1) and np.allclose(over_http, over_grpc)

        # Prometheus targets name the pod, and its metrics port counts the requests.
        assert targets.last == [(f"{ip}:8002", {"namespace": ns, "pod": name})]
        with DIRECT.open(f"http://{ip}:8002/metrics", timeout=5) as r:
            assert "nv_inference_request_success" in r.read().decode()

        # Deleting the pod stops its server; the replacement gets a server (and Readiness) of its own.
        kubectl.run("delete", "pod", name, "-n", ns, "--wait=false")
        wait_for(lambda: server.returncode is not None, timeout=30,
                 what="the deleted pod's tritonserver to stop (and be reaped)")
        assert not server.running
        new = wait_for(lambda: [p for p in running_pods(kubectl, ns, "ranker")
                                if p["metadata"]["name"] != name and ready(p)],
                       timeout=90, what="the replacement pod to turn Ready")[0]
        assert f"{ns}/{name}" not in agent.states(ns)
        assert health_ready(new["status"]["podIP"])

        # Scaled to zero: no server and no target left.
        kubectl.run("scale", "deployment", "ranker", "-n", ns, "--replicas=0")
        wait_for(lambda: not agent.states(ns) and targets.last == [], timeout=30,
                 what="every server stopped after scaling to zero")
    print(f"pod Ready {became_ready:.1f}s after the agent started")


def test_a_pod_whose_model_cannot_load_never_turns_ready(cluster, kubectl, kube, ns, tmp_path, triton):
    version_dir = tmp_path / "store" / MODEL / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.onnx").write_bytes(b"this is not an ONNX model")
    kubectl.apply(triton_objects("broken", ns, version_dir))
    pod = wait_for(lambda: (running_pods(kubectl, ns, "broken") or [None])[0], what="a running pod")
    name = pod["metadata"]["name"]

    restarts: dict[int, float] = {}
    with ProbedPods(kube, tmp_path / "agent", namespace=ns):
        started = time.monotonic()
        while time.monotonic() - started < 22:
            pod = kubectl.get("pod", name, ns)
            assert not ready(pod), "a pod whose model cannot load turned Ready"
            status = pod["status"]["containerStatuses"][0]
            restarts.setdefault(status["restartCount"], time.monotonic())
            time.sleep(0.5)
    # The kubelet's account of it: the crash, why, and a back-off before the next start.
    assert status["ready"] is False and status["restartCount"] >= 1
    terminated = status["lastState"]["terminated"]
    assert terminated["exitCode"] != 0 and terminated["reason"] == "Error"
    assert "model.onnx" in terminated["message"] or "load" in terminated["message"].lower(), terminated
    assert status["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff" or "running" in status["state"]
    # Not faster than the 10 s back-off (then 20 s): at most 2 restarts in 22 s.
    assert max(restarts) <= 2, restarts
    if 2 in restarts:
        assert restarts[2] - restarts[1] >= 9, restarts


ANALYZE = textwrap.dedent("""
    import json, os, sys
    args = sys.argv[1:]
    probe = json.load(open(os.path.join(args[args.index("--probe-dir") + 1], "requests.json")))
    scratch = os.path.join(os.environ["TMPDIR"], "scratch.txt")
    open(scratch, "w").write("ok")
    result = {"verdict": "pass", "requests": len(probe), "tmp": open(scratch).read()}
    open(args[args.index("--result-file") + 1], "w").write(json.dumps(result))
""")


def test_job_runner_runs_an_analysis_pod_and_records_its_result(cluster, kubectl, kube, ns, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "requests.json").write_text(json.dumps([[0.0] * 13] * 3))
    labels = {"app.kubernetes.io/component": ANALYSIS_COMPONENT}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "analysis", "namespace": ns, "labels": labels},
           "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": {
               "restartPolicy": "Never",
               "containers": [{"name": "analyze", "image": "peakserve:dev", "command": ["python", "-c", ANALYZE],
                               "args": ["--probe-dir", "/probe", "--result-file", "/dev/termination-log"],
                               "env": [{"name": "TMPDIR", "value": "/tmp"}],
                               "volumeMounts": [{"name": "probe", "mountPath": "/probe", "readOnly": True},
                                                {"name": "tmp", "mountPath": "/tmp"}]}],
               "volumes": [{"name": "probe", "hostPath": {"path": str(probe), "type": "Directory"}},
                           {"name": "tmp", "emptyDir": {}}]}}}}
    kubectl.apply(job)
    pod = wait_for(lambda: (kubectl.list("pod", ns, ANALYSIS_SELECTOR) or [None])[0], what="the analysis pod")
    wait_for(lambda: kubectl.get("pod", pod["metadata"]["name"], ns)["status"].get("phase") == "Running",
             what="KWOK to start the analysis pod")
    time.sleep(1.5)  # KWOK's pod-complete stage must leave it alone
    assert kubectl.get("pod", pod["metadata"]["name"], ns)["status"]["phase"] == "Running"

    stop, done = threading.Event(), []
    runner = threading.Thread(target=run_job_pods, args=(kube, stop), daemon=True,
                              kwargs={"namespace": ns, "poll": 0.3, "on_done": lambda p, code: done.append(code)})
    runner.start()
    try:
        wait_for(lambda: done, timeout=60, what="the runner to run the analysis pod")
    finally:
        stop.set()
        runner.join(timeout=10)
    pod = kubectl.get("pod", pod["metadata"]["name"], ns)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert done == [0] and terminated["exitCode"] == 0, terminated["message"]
    assert pod["status"]["phase"] == "Succeeded"
    assert json.loads(terminated["message"]) == {"verdict": "pass", "requests": 3, "tmp": "ok"}
    wait_for(lambda: condition(kubectl.get("job", "analysis", ns), "Complete").get("status") == "True",
             what="the Job to complete")


def test_gateway_api_crds_install_from_their_go_module(cluster, kubectl, kube, ns):
    assert not kube.serves(f"{gateway_api.GROUP}/v1"), "Gateway API must not be installed by default"
    try:
        names = gateway_api.install_gateway_api(kube, log=lambda m: print(m, file=sys.stderr))
        assert gateway_api.HTTPROUTE_CRD in names
        crd = kubectl.get("crd", gateway_api.HTTPROUTE_CRD)
        assert condition(crd, "Established")["status"] == "True"
        assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == "v1.6.3"
        assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/channel"] == "standard"
        # HTTPRoute is served: a weighted route (stable/canary) is accepted by the API server.
        kubectl.apply({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                       "metadata": {"name": "ranker", "namespace": ns},
                       "spec": {"parentRefs": [{"name": "gateway"}],
                                "rules": [{"backendRefs": [{"name": "ranker-stable", "port": 8000, "weight": 90},
                                                           {"name": "ranker-canary", "port": 8000, "weight": 10}]}]}})
        route = kubectl.get("httproute", "ranker", ns)
        assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    finally:
        # The rest of the session covers the cluster without Gateway API.
        gateway_api.uninstall_gateway_api(kube, timeout=180)
    assert not kube.serves(f"{gateway_api.GROUP}/v1")
