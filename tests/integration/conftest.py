"""A real control plane and a real operator process for the whole session; a namespace per test."""

from __future__ import annotations

import hashlib
import sys

import pytest

from peakserve_harness.controlplane.cluster import DevCluster
from peakserve_harness.operator_process import OperatorProcess
from peakserve_harness.controlplane.tools import ensure_tools

from .cluster import ROOT, Kubectl, condition, wait_for


DRIFT_INTERVAL = 3.0

# Operators started with admin rights; tests that must prove what another identity can do pause them.
ADMIN_OPERATORS: list[OperatorProcess] = []


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
    # `kubectl wait` fails outright while the new CRD has no conditions yet (seen under load): poll.
    wait_for(lambda: condition(k.get("crd", "modeldeployments.peakserve.io"), "Established").get("status") == "True",
             what="the CRD to be established")
    return k


@pytest.fixture(scope="session")
def operator(cluster, kubectl, tmp_path_factory):
    op = OperatorProcess(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log",
                         drift_interval=DRIFT_INTERVAL)
    op.start()
    ADMIN_OPERATORS.append(op)
    yield op
    ADMIN_OPERATORS.remove(op)
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
