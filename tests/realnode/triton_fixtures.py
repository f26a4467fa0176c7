"""Fixtures for serving a ModelDeployment on the real node: the CPU Triton image imported into the node's
containerd, a built ranker artifact in a host directory (served as a hostPath), and the operator as a host
process against the real node's control plane. Import them into a test module to use them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from peakserve.builder.pipeline import run_build
from peakserve_harness.operator_process import OperatorProcess
from peakserve_harness.sample_ranker import fp32_build_spec, trained_source
from peakserve_harness.images.triton_image import NAME as TRITON_IMAGE
from peakserve_harness.realnode import binaries

from .kube_tools import wait_for

ROOT = Path(__file__).resolve().parents[2]
# Where `make images` puts the archives; the test builds the Triton one there when it is missing.
IMAGES_DIR = ROOT / ".dev" / "images"
TRITON_ARCHIVE = IMAGES_DIR / "tritonserver-cpu.oci.tar"
SAMPLE = ROOT / "model_repo" / "ranker"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ImportedImage:
    name: str
    import_seconds: float
    build_seconds: float | None   # None: the archive was already built


def _ensure_triton_archive() -> float | None:
    if TRITON_ARCHIVE.is_file():
        return None
    started = time.monotonic()
    # --no-verify: the real node itself is the check; a cold build is minutes on 2 cores.
    subprocess.run([sys.executable, "-m", "peakserve_harness.images", "build", "triton", "--out", str(IMAGES_DIR),
                    "--no-verify"], check=True, timeout=1800)
    return round(time.monotonic() - started, 1)


@pytest.fixture(scope="session")
def triton_image(real_node, import_image) -> ImportedImage:
    """localhost/peakserve/tritonserver-cpu, imported into the node's k8s.io namespace (the CRI's)."""
    build_seconds = _ensure_triton_archive()
    seconds = round(import_image(TRITON_ARCHIVE), 1)
    ctr, socket = binaries.containerd_dir() / "ctr", real_node.layout.containerd_socket.resolve()
    listed = subprocess.run([str(ctr), "--address", str(socket), "-n", "k8s.io", "images", "ls", "-q"],
                            capture_output=True, text=True, timeout=60).stdout.split()
    assert TRITON_IMAGE in listed, f"{TRITON_IMAGE} not among the node's images after import: {listed}"
    _log(f"[realnode] triton image {TRITON_IMAGE} ({TRITON_ARCHIVE.stat().st_size / 2**20:.0f} MiB archive) "
         f"imported in {seconds}s" + (f", built in {build_seconds}s" if build_seconds else " (archive cached)"))
    return ImportedImage(TRITON_IMAGE, seconds, build_seconds)


# --------------------------------------------------------------------------------------- the artifact

def _readable_by_all(root: Path) -> None:
    # Triton runs as uid 1000 and hostPath volumes keep host modes (fsGroup does not apply to them);
    # the builder's staging directories are 0700.
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)


@dataclass(frozen=True)
class BuiltModel:
    version_dir: Path     # <store>/<build hash>/ranker/1: model.onnx as the build published it
    source: Path          # the trained build source (its evaluation.npz gives real inputs)


@pytest.fixture(scope="session")
def built_ranker(tmp_path_factory) -> BuiltModel:
    """The sample ranker built by peakserve's real builder and published to a host artifact store."""
    source = trained_source()
    store = tmp_path_factory.mktemp("artifacts")
    started = time.monotonic()
    result = run_build(fp32_build_spec(), source, store, quiet=True)
    assert result.phase == "Succeeded", result.message
    version_dir = store / result.artifact / "ranker" / "1"
    assert (version_dir / "model.onnx").is_file(), sorted(p.name for p in version_dir.parent.rglob("*"))
    _readable_by_all(store)
    _log(f"[realnode] ranker built ({result.candidate}) in {time.monotonic() - started:.1f}s: {version_dir}")
    return BuiltModel(version_dir, source)


# ---------------------------------------------------------------------------------------- the operator

@pytest.fixture(scope="session")
def operator_on_real_node(real_node, kubectl_argv, tmp_path_factory):
    """The CRD installed and `peakserve run` as a host process against the real node's control plane."""
    subprocess.run([*kubectl_argv, "apply", "--server-side", "-f", str(ROOT / "crds")], check=True,
                   capture_output=True, timeout=60)
    # `kubectl wait` fails outright while the new CRD has no conditions yet: poll.
    wait_for(lambda: "True" in subprocess.run(
        [*kubectl_argv, "get", "crd", "modeldeployments.peakserve.io", "-o",
         "jsonpath={.status.conditions[?(@.type=='Established')].status}"],
        capture_output=True, text=True, timeout=30).stdout, 60, interval=1.0, what="the CRD to be established")
    op = OperatorProcess(real_node.cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log",
                         drift_interval=3.0)
    op.start()
    try:
        yield op
    finally:
        op.stop()
