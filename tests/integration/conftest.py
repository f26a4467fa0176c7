"""A real control plane and a real operator process for the whole session; a namespace per test."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from peakserve.devcluster.cluster import DevCluster
from peakserve.devcluster.tools import ensure_tools

from .cluster import ROOT, Kubectl, wait_for

pytestmark = pytest.mark.integration

DRIFT_INTERVAL = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    dev = DevCluster(tmp_path_factory.mktemp("control-plane"), log=lambda m: print(m, file=sys.stderr))
    dev.up()
    yield dev
    dev.down()


@pytest.fixture(scope="session")
def kubectl(cluster) -> Kubectl:
    k = Kubectl(ensure_tools()["kubectl"], cluster.kubeconfig)
    k.run("apply", "--server-side", "-f", str(ROOT / "crds"))
    k.run("wait", "--for", "condition=established", "crd/modeldeployments.peakserve.io")
    return k


class OperatorProcess:
    """`peakserve run` as users run it, against the test control plane."""

    def __init__(self, kubeconfig: Path, log_path: Path):
        self.kubeconfig, self.log_path = kubeconfig, log_path
        self.health_port, self.metrics_port = _free_port(), _free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peakserve.cli", "run",
             f"--health-address=127.0.0.1:{self.health_port}",
             f"--metrics-address=127.0.0.1:{self.metrics_port}",
             f"--drift-interval={DRIFT_INTERVAL}"],
            env=env, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        wait_for(self.healthy, timeout=30, what="operator liveness endpoint")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        time.sleep(0.5)
        self.start()


@pytest.fixture(scope="session")
def operator(cluster, kubectl, tmp_path_factory):
    op = OperatorProcess(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(request, kubectl):
    """A fresh namespace per test, deleted afterwards."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]
    name = f"t-{request.node.name.lower().replace('_', '-')[:40].strip('-')}-{digest}"
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    kubectl.run("create", "namespace", name)
    yield name
    # Waiting frees the GPUs its pods held before the next test schedules.
    kubectl.run("delete", "namespace", name, "--timeout=60s", check=False)
