"""A dev control plane with one real worker node (kubelet + containerd + runc) for the session.

Needs root, runc, iptables and cgroup v1 (``make test-real-node`` installs the host packages and
builds the node's binaries first). The node's figures are printed for the notes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from peakserve_harness.controlplane.cluster import DevCluster
from peakserve_harness.controlplane.tools import ensure_tools
from peakserve_harness.realnode import binaries
from peakserve_harness.realnode.host_packages import ensure_host_packages, host_command
from peakserve_harness.realnode.node import RealNode
from peakserve_harness.realnode.node_images import import_archive, import_busybox

REPO = Path(__file__).resolve().parents[2]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def real_node(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the real node needs root (mounts, cgroups, network namespaces)")
    ensure_host_packages(_log)
    cluster = DevCluster(tmp_path_factory.mktemp("real-node-cluster"), log=_log)
    node = RealNode(cluster, log=_log)
    try:
        cluster.up()
        node.start()
        _log(f"[realnode] figures: node Ready in {node.ready_seconds:.1f}s; cold builds {node.build_seconds}")
        yield node
    finally:
        node.stop()
        cluster.down()


@pytest.fixture(scope="session")
def busybox_image(real_node) -> str:
    """A one-binary image from Debian's busybox-static, imported into the node's containerd."""
    return import_busybox(binaries.containerd_dir() / "ctr", real_node.layout.containerd_socket,
                          Path(host_command("busybox")), real_node.layout.root)


@pytest.fixture(scope="session")
def kubectl_argv(real_node) -> list[str]:
    return [str(ensure_tools(_log)["kubectl"]), f"--kubeconfig={real_node.cluster.kubeconfig}"]


@pytest.fixture(scope="session")
def import_image(real_node) -> Callable[[Path], float]:
    """``import_image(archive)``: put an OCI archive (as the images package writes them) into the node's
    containerd, where pods with ``imagePullPolicy: Never`` find it by its name; returns the seconds."""
    def _import(archive: Path) -> float:
        started = time.monotonic()
        import_archive(binaries.containerd_dir() / "ctr", real_node.layout.containerd_socket, Path(archive))
        return time.monotonic() - started
    return _import


@pytest.fixture(scope="session")
def operator_image():
    """The operator image from images/operator/Dockerfile (buildah; root, debootstrap), cached by the
    content of what it is built from: (ArchiveInfo, build seconds, built now)."""
    from peakserve_harness.images import debian_base, operator_cache
    from peakserve_harness.images.progress import Progress

    if os.geteuid() != 0:
        pytest.skip("building the operator image needs root (debootstrap, buildah)")
    base, _ = debian_base.ensure(Progress("base"))
    return operator_cache.ensure(REPO, base, Progress("operator"))
