"""The Helm chart against the real control plane: install, upgrade, uninstall, and the operator running
with nothing but the chart ServiceAccount's token: enough to serve, and denied everything else."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from peakserve.api.crd import build_crd
from peakserve_harness.operator_process import OperatorProcess
from peakserve_harness.controlplane.tools import ensure_tools

from .chart import CHART, chart_run_args, chart_template, helm, token_kubeconfig
from .cluster import ROOT, md
from . import chart

pytestmark = pytest.mark.integration


@pytest.fixture
def admin_operators_paused():
    """Stop the admin-rights operator so that only the identity under test does the work."""
    with chart.admin_operators_paused():
        yield


def _install_steps() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- BEGIN INSTALL STEPS")[1].split("<!-- END INSTALL STEPS -->")[0]
    body = block.split("```bash\n")[1].split("```")[0]
    return [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _shell(step: str, kubeconfig: Path) -> subprocess.CompletedProcess:
    tools = ensure_tools()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{tools['helm'].parent}:{os.environ['PATH']}"}
    return subprocess.run(step, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


def test_readme_install_steps_with_the_chart_identity(kubectl, cluster, admin_operators_paused, core_install,
                                                      tmp_path):
    """The README's install block, step by step. KWOK cannot run the operator image, so the operator
    runs here instead, as the image has it: the wheel without extras, `peakserve run` with the chart's
    args, and the token of the chart's ServiceAccount and nothing else."""
    steps = _install_steps()
    assert steps[0].startswith("helm install peakserve charts/peakserve")
    operator = None
    try:
        for step in steps:
            result = _shell(step, cluster.kubeconfig)
            assert result.returncode == 0, f"README step failed: {step}\n{result.stdout}\n{result.stderr}"
            if step.startswith("helm install"):
                config = token_kubeconfig(kubectl, "peakserve-system", "peakserve", tmp_path / "sa.kubeconfig")
                # The container's args as the chart renders them for this release; only the listen
                # addresses differ: 127.0.0.1 and free ports, which this test reaches (/healthz) and which
                # no other operator of the session holds, instead of the chart's 0.0.0.0:8080 and :9090.
                operator = OperatorProcess(config, tmp_path / "operator.log", command=[core_install.peakserve],
                                           args=chart_run_args("peakserve", "peakserve-system"))
                operator.start()
        assert re.search(r"^ranker\s+True\s+2\s+int8\s+ranker", result.stdout, re.M), result.stdout

        # Sufficient: it served the example, and nothing it tried was refused.
        log = (tmp_path / "operator.log").read_text()
        assert "403" not in log and "Forbidden" not in log and "forbidden" not in log, log[-3000:]
        events = kubectl.list("events", "default")
        assert any(e["reason"] == "Serving" and e["involvedObject"]["name"] == "ranker" for e in events)

        # Not excessive: the same token is refused what the operator must never do.
        sa = ["--kubeconfig", str(tmp_path / "sa.kubeconfig")]
        denied = [
            ("get", "secrets", "-A"),
            ("delete", "node", "gpu-a10-0", "--dry-run=server"),
            ("get", "node", "gpu-a10-0"),   # nodes may be listed (PromotionReady), never read one by one
            ("create", "clusterrolebinding", "escalate", "--clusterrole=cluster-admin",
             "--serviceaccount=peakserve-system:peakserve", "--dry-run=server"),
            ("delete", "namespace", "default", "--dry-run=server"),
            ("create", "secret", "generic", "x", "--from-literal=a=b", "--dry-run=server"),
        ]
        for args in denied:
            result = kubectl.run(*sa, *args, check=False)
            assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (args, result.stderr)
    finally:
        if operator:
            operator.stop()
        kubectl.run("delete", "-f", str(ROOT / "examples" / "ranker.yaml"), "--wait=true", check=False)
        kubectl.run("delete", "-f", str(ROOT / "examples" / "model-store.yaml"), "--wait=false", check=False)
        _shell("helm uninstall peakserve --namespace peakserve-system --wait", cluster.kubeconfig)
        kubectl.run("delete", "namespace", "peakserve-system", "--wait=false", check=False)


def test_install_upgrade_uninstall(kubectl, cluster, tmp_path):
    ns = "peakserve-helm"
    helm(cluster, "install", "ps", str(CHART), "-n", ns, "--create-namespace", "--wait", "--timeout=120s")
    dep = kubectl.get("deployment", "ps-peakserve", ns)
    assert dep["spec"]["strategy"]["type"] == "Recreate" and dep["status"]["readyReplicas"] == 1
    assert "--drift-interval=300" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert kubectl.get("clusterrole", "ps-peakserve") and kubectl.get("configmap", "ps-peakserve-dashboard", ns)

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"driftInterval": 120, "grafanaDashboard": {"enabled": False},
                                      "watchNamespaces": ["team-a"], "resources": {
                                          "requests": {"cpu": "200m", "memory": "300Mi"},
                                          "limits": {"memory": "1Gi"}}}))
    kubectl.run("create", "namespace", "team-a")
    try:
        upgrade = helm(cluster, "upgrade", "ps", str(CHART), "-n", ns, "-f", str(values), "--wait",
                        "--timeout=180s")
        assert "STATUS: deployed" in upgrade.stdout
        dep = kubectl.get("deployment", "ps-peakserve", ns)
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--drift-interval=120" in args and "--namespace=team-a" in args
        assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
        assert kubectl.get("configmap", "ps-peakserve-dashboard", ns) is None
        assert kubectl.get("clusterrole", "ps-peakserve") is None
        assert kubectl.get("role", "ps-peakserve", "team-a")
        # PromotionReady's cluster-wide lists of nodes and pods keep a ClusterRole of their own.
        assert kubectl.get("clusterrole", "ps-peakserve-capacity")
        # The pre-upgrade hook ran (KWOK completes its pod) and cleaned up after itself on success.
        history = helm(cluster, "history", "ps", "-n", ns, "-o", "json").stdout
        assert [r["status"] for r in json.loads(history)] == ["superseded", "deployed"]
        assert kubectl.get("job", "ps-peakserve-crd-upgrade", ns) is None
    finally:
        helm(cluster, "uninstall", "ps", "-n", ns, "--wait")
        kubectl.run("delete", "namespace", "team-a", "--wait=false", check=False)
    assert kubectl.get("deployment", "ps-peakserve", ns) is None
    assert kubectl.get("role", "ps-peakserve", "team-a") is None
    # Helm never deletes CRDs, so ModelDeployments survive an uninstall.
    assert kubectl.get("crd", "modeldeployments.peakserve.io")
    kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def _previous_crd() -> dict:
    """The CRD as an older peakserve had it: no serving.rollout yet."""
    crd = build_crd()
    serving = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["serving"]
    del serving["properties"]["rollout"]
    serving["default"].pop("rollout")
    return crd


def test_crd_upgrade_keeps_live_model_deployments(kubectl, cluster, ns, tmp_path, core_install):
    kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=older-peakserve", "-f", "-",
                input=yaml.safe_dump(_previous_crd()))
    kubectl.run("wait", "--for", "condition=established", "crd/modeldeployments.peakserve.io")
    try:
        kubectl.apply(md("live", ns))
        stored = kubectl.get("modeldeployment", "live", ns)
        assert "rollout" not in stored["spec"]["serving"]

        # The hook's own identity: the ServiceAccount and ClusterRole that the chart renders for it.
        docs = [d for d in chart_template("ps", ns, "templates/crd-upgrade.yaml") if d["kind"] != "Job"]
        for d in docs:
            d["metadata"].pop("annotations", None)
        kubectl.apply(docs)
        config = token_kubeconfig(kubectl, ns, "ps-peakserve-crd-upgrade", tmp_path / "hook.kubeconfig")
        # The hook Job runs the operator image: the wheel without extras.
        result = subprocess.run([core_install.peakserve, "crds", "apply", "--kubeconfig", str(config)],
                                capture_output=True, text=True, timeout=120, env=core_install.env)
        assert result.returncode == 0, result.stderr
        assert "Established" in result.stdout

        live = kubectl.get("modeldeployment", "live", ns)
        assert live["spec"]["serving"]["rollout"] == {"abort": False, "force": False, "paused": False,  # defaulted
                                                      "routeParents": [], "steps": []}                # on read
        assert live["metadata"]["uid"] == stored["metadata"]["uid"]
        kubectl.apply(md("new", ns, serving={"rollout": {"maxSurge": 1, "maxUnavailable": 0}}))
        # The hook identity can touch that one CRD and nothing else.
        other = kubectl.run("--kubeconfig", str(config), "get", "crd", "horizontalpodautoscalers.autoscaling", check=False)
        assert other.returncode != 0 and "forbidden" in other.stderr.lower()
    finally:
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        kubectl.run("delete", "clusterrole,clusterrolebinding", "ps-peakserve-crd-upgrade", check=False)
