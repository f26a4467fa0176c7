"""The Helm chart as tests use it: helm against the dev cluster, what a template renders, the args the
chart gives the operator container, and a kubeconfig holding only the chart ServiceAccount's token."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Iterator

import yaml

from peakserve_harness.controlplane.tools import ensure_tools

from . import conftest
from .cluster import ROOT

CHART = ROOT / "charts" / "peakserve"


def helm(cluster, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(ensure_tools()["helm"]), f"--kubeconfig={cluster.kubeconfig}", *args],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result


def chart_template(release: str, namespace: str, template: str, *values: str, chart: Path = CHART) -> list[dict]:
    """The objects one template of the chart renders; `values`: extra helm args (--set k=v, -f file)."""
    rendered = subprocess.run([str(ensure_tools()["helm"]), "template", release, str(chart), "-n", namespace,
                               "--show-only", template, *values], capture_output=True, text=True,
                              check=True).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def chart_run_args(release: str, namespace: str, *values: str, chart: Path = CHART) -> list[str]:
    """The args the chart's Deployment passes to the operator container after `run`, less the two listen
    addresses (OperatorProcess puts its own in their place)."""
    [deployment] = chart_template(release, namespace, "templates/deployment.yaml", *values, chart=chart)
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"]
    command, *args = container["args"]
    listen = [a for a in args if a.startswith(("--health-address=", "--metrics-address="))]
    assert command == "run" and len(listen) == 2, container["args"]
    return [a for a in args if a not in listen]


def token_kubeconfig(kubectl, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig holding only a token of the ServiceAccount, as a pod of the chart would have."""
    token = kubectl.run("create", "token", service_account, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(Path(kubectl.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": service_account}}]}))
    return path


@contextlib.contextmanager
def admin_operators_paused() -> Iterator[None]:
    """Stop the session's admin-rights operators so that only the operators under test act."""
    paused = [op for op in conftest.ADMIN_OPERATORS if op.alive()]
    for op in paused:
        op.stop()
    try:
        yield
    finally:
        for op in paused:
            op.start()
