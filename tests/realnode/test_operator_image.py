"""The shipped operator image, run for real: built from images/operator/Dockerfile, imported into the
real node's containerd and installed with the Helm chart under its restricted securityContext
(non-root 65532, read-only root filesystem). Its /healthz probes must pass on the real kubelet, and
it must reconcile a ModelDeployment through the in-cluster config (10.96.0.1:443, which the real node
provides without kube-proxy). An operator wheel that crashes at import fails here, as KWOK never would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from peakserve_harness.controlplane.tools import ensure_tools
from peakserve_harness.realnode import service_proxy
from peakserve_harness.realnode.layout import NODE_LABEL, NODE_TAINT

from .kube_tools import get_json, kubectl as _kubectl, parse_rfc3339, condition

pytestmark = [pytest.mark.real_node, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "peakserve"
RELEASE, NAMESPACE = "ps", "peakserve-system"
MD_NAMESPACE = "realnode-models"
SELECTOR = "app.kubernetes.io/name=peakserve,app.kubernetes.io/instance=ps"


def _run(argv: list[str], *args: str, stdin: str | None = None, check: bool = True) -> str:
    """helm or kubectl (``argv``), bounded in time; helm's --wait may take minutes."""
    return _kubectl(argv, *args, stdin=stdin, check=check, timeout=300)


def _values(image_name: str) -> dict:
    repository, tag = image_name.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]},
        "tolerations": [{"key": NODE_TAINT[0], "operator": "Equal", "value": NODE_TAINT[1],
                         "effect": "NoSchedule"}],
    }


def _ready_at(pod: dict) -> str | None:
    ready = condition(pod, "Ready")
    return ready["lastTransitionTime"] if ready.get("status") == "True" else None


def _operator_pod(kubectl: list[str]) -> dict:
    pods = get_json(kubectl, "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    return pods[0] if pods else {}


def _diagnose(kubectl: list[str], real_node) -> str:
    return "\n".join([
        _run(kubectl, "get", "pods", "-n", NAMESPACE, "-o", "wide", check=False),
        _run(kubectl, "get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False)[-3000:],
        _run(kubectl, "logs", "-n", NAMESPACE, "-l", SELECTOR, "--tail=40", check=False),
        real_node.log_tail("kubelet", 15), real_node.log_tail("service-proxy", 10)])


def test_operator_image_runs_and_reconciles(real_node, kubectl_argv, operator_image, import_image, tmp_path):
    info, build_s, built_now = operator_image
    import_s = import_image(info.path)
    figures = {"image": info.name, "build_s": build_s, "built_now": built_now,
               "archive_mib": round(info.size / 2**20, 1), "layers_unpacked_mib": round(info.unpacked_size / 2**20, 1),
               "import_s": round(import_s, 1)}

    helm = [str(ensure_tools()["helm"]), f"--kubeconfig={real_node.cluster.kubeconfig}"]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(_values(info.name)))
    kubectl = kubectl_argv
    started = time.monotonic()
    _run(helm, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", "-f", str(values))
    try:
        pod: dict = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            pod = _operator_pod(kubectl)
            if _ready_at(pod):
                break
            restarts = sum(c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses", []))
            assert restarts == 0, f"the operator container restarted:\n{_diagnose(kubectl, real_node)}"
            time.sleep(1)
        observed = time.monotonic() - started
        assert _ready_at(pod), f"operator pod not Ready after 240s:\n{_diagnose(kubectl, real_node)}"
        figures["pod_created_to_ready_s"] = (parse_rfc3339(_ready_at(pod))
                                             - parse_rfc3339(pod["metadata"]["creationTimestamp"])).total_seconds()
        figures["install_to_ready_observed_s"] = round(observed, 1)

        # It ran on the real node, as the chart's restricted user, with the image built here.
        spec = pod["spec"]
        assert spec["nodeName"] == real_node.name
        assert spec["securityContext"]["runAsUser"] == 65532 and spec["securityContext"]["runAsNonRoot"]
        [container] = [c for c in spec["containers"] if c["name"] == "operator"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["image"] == info.name and container["imagePullPolicy"] == "Never"
        [status] = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0
        # The probes really ran: the kubelet's prober reached /healthz (KWOK would mark it Ready unprobed).
        assert status["started"] and pod["status"]["podIP"].startswith("10.214.0.")

        # In-cluster config through 10.96.0.1:443: the operator reconciles a ModelDeployment.
        md = yaml.safe_load((REPO / "examples" / "ranker.yaml").read_text())
        md["metadata"]["namespace"] = MD_NAMESPACE
        _run(kubectl, "create", "namespace", MD_NAMESPACE)
        applied = time.monotonic()
        _run(kubectl, "apply", "-f", "-", stdin=json.dumps(md))
        live: dict = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            live = get_json(kubectl, "modeldeployment", "ranker", "-n", MD_NAMESPACE)
            st = live.get("status", {})
            if st.get("observedGeneration") == live["metadata"]["generation"] and st.get("conditions"):
                break
            time.sleep(1)
        st = live.get("status", {})
        assert st.get("observedGeneration") == live["metadata"]["generation"] and st.get("conditions"), \
            f"no status from the operator after 120s: {json.dumps(live, indent=1)[:2000]}\n" \
            f"{_diagnose(kubectl, real_node)}"
        figures["md_status_s"] = round(time.monotonic() - applied, 1)
        figures["md_conditions"] = {c["type"]: c["status"] for c in st["conditions"]}
        owned = get_json(kubectl, "deployments", "-n", MD_NAMESPACE)["items"]
        assert owned, "the operator wrote status but created no Deployment for Triton"
        figures["md_children"] = [d["metadata"]["name"] for d in owned]
        # It got there through 10.96.0.1:443 as kube-proxy would route it, not some other way.
        figures["dnat_connections"] = service_proxy.dnat_connections()
        assert figures["dnat_connections"] > 0
        pod = _operator_pod(kubectl)
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, _diagnose(kubectl, real_node)
    finally:
        print(f"\n[realnode] operator image figures: {json.dumps(figures)}", file=sys.stderr, flush=True)
        _run(kubectl, "delete", "namespace", MD_NAMESPACE, "--wait=true", "--timeout=90s", check=False)
        _run(helm, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=90s", check=False)
        _run(kubectl, "delete", "namespace", NAMESPACE, "--wait=false", check=False)
