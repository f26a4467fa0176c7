"""A CPU Triton image that satisfies the Triton Deployment's container spec (operator/peakserve/render/deployment.py).

What that container needs, and where it comes from:
- ``command: ["tritonserver"]`` found on PATH, with Triton's default backend directory
  ``/opt/tritonserver/backends`` (the args name none): the binary and its bundled libraries from the
  nvidia-pytriton wheel (the tool virtualenv of :mod:`peakserve_harness.triton.install`), laid out as
  NGC's images lay them out (``bin/``, ``lib/``, ``backends/``, ``caches/`` under /opt/tritonserver;
  the binary's RPATH already looks in ``../lib``).
- the ConfigMap's ``platform: "onnxruntime_onnx"`` model config, unmodified: the wheel has no
  onnxruntime backend, so ``backends/onnxruntime/model.py`` is a *Python-based backend* (Triton runs a
  backend directory's model.py on the python backend when it has no shared library) that serves
  ``/models/NAME/VERSION/model.onnx`` with onnxruntime: the harness's onnx_model.py.
- the python backend (library, utils, the stub for the image's Python 3.11) with numpy<2 (the
  stub's bindings need it) and onnxruntime in that Python: the same versions as the tool virtualenv.
- the pod runs as uid/gid 1000 (TRITON_UID, NGC's triton-server user) with a read-only root, so the
  user exists and nothing is written outside /tmp and /dev/shm (PYTHONDONTWRITEBYTECODE).

The image is the base layer plus one layer: what these steps changed in a copy of the base rootfs.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import time
from pathlib import Path

from peakserve.render.deployment import GRPC_PORT, HTTP_PORT, METRICS_PORT, TRITON_UID

from ..triton.install import PYTRITON_VERSION, TritonPaths, ensure_installed
from ..triton.python_backend import MODEL_TEMPLATE
from . import oci_archive, oci_image, oci_layer
from .debian_base import ENV, Base
from .oci_archive import ArchiveInfo
from .progress import Progress, run

NAME = f"localhost/peakserve/tritonserver-cpu:pytriton-{PYTRITON_VERSION}"
HOME = "opt/tritonserver"
PYTHON_VERSION = "3.11"  # bookworm's, and the stub's
SITE = f"usr/local/lib/python{PYTHON_VERSION}/dist-packages"  # Debian's python sees it; pip as root installs there
USER = "triton-server"

RUN_CONFIG = oci_image.RunConfig(
    env=(*oci_image.env_with_path(ENV, f"/{HOME}/bin"),
         f"LD_LIBRARY_PATH=/{HOME}/lib",
         "PYTHONDONTWRITEBYTECODE=1",
         "PYTHONUNBUFFERED=1"),
    cmd=("tritonserver", "--model-repository=/models"),
    workdir=f"/{HOME}",
    user=f"{TRITON_UID}:{TRITON_UID}",
    exposed_ports=tuple(f"{p}/tcp" for p in (HTTP_PORT, GRPC_PORT, METRICS_PORT)),
    labels={"org.opencontainers.image.title": "peakserve-tritonserver-cpu",
            "org.opencontainers.image.description":
                f"tritonserver from nvidia-pytriton {PYTRITON_VERSION}: python backend, and onnxruntime "
                "models served through a Python-based onnxruntime backend (CPU only)",
            "org.opencontainers.image.version": PYTRITON_VERSION},
)


def python_requirements(paths: TritonPaths) -> list[str]:
    """numpy and onnxruntime pinned to the tool virtualenv's versions (the ones the harness tests with)."""
    found = {d.metadata["Name"].lower(): d.version
             for d in importlib.metadata.distributions(path=[str(paths.site_packages)])}
    return [f"{n}=={found[n]}" for n in ("numpy", "onnxruntime")]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(src, dst)


def place_triton(paths: TritonPaths, rootfs: Path) -> None:
    home = rootfs / HOME
    stub = paths.python_backend.parents[1] / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub"
    _copy(paths.binary, home / "bin" / "tritonserver")
    _copy(paths.libs_dir, home / "lib")
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _copy(paths.python_backend / name, home / "backends" / "python" / name)
    _copy(stub, home / "backends" / "python" / "triton_python_backend_stub")
    caches = paths.binary.parents[1] / "caches"
    if caches.is_dir():
        _copy(caches, home / "caches")
    _copy(MODEL_TEMPLATE, home / "backends" / "onnxruntime" / "model.py")
    # Also for shells and probes that do not use the image's PATH.
    link = rootfs / "usr" / "local" / "bin" / "tritonserver"
    if not os.path.lexists(link):
        os.symlink(f"/{HOME}/bin/tritonserver", link)
    # The python backend and its stub load the bundled libraries by name from outside bin/.
    (rootfs / "etc" / "ld.so.conf.d" / "tritonserver.conf").write_text(f"/{HOME}/lib\n")


def assemble(base: Base, paths: TritonPaths, rootfs: Path, progress: Progress, log: Path) -> list[str]:
    """Build the image's rootfs at ``rootfs`` from a copy of the base; returns the pip requirements."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    run(["cp", "-a", str(base.rootfs), str(rootfs)], progress, log, label="copy base")
    place_triton(paths, rootfs)
    requirements = python_requirements(paths)
    # The host's pip (same Python minor version, same manylinux platform) installs into the image's
    # site directory: no network or CA setup inside the chroot, and pip's cache is reused.
    run([sys.executable, "-m", "pip", "install", "-q", "--no-warn-script-location", "--only-binary=:all:",
         "--target", str(rootfs / SITE), *requirements], progress, log, timeout=900, label="pip")
    shutil.rmtree(rootfs / SITE / "bin", ignore_errors=True)  # console scripts with the host's shebang
    run(["chroot", str(rootfs), "ldconfig"], progress, log, label="ldconfig")
    run(["chroot", str(rootfs), "groupadd", "--gid", str(TRITON_UID), USER], progress, log, label="groupadd")
    run(["chroot", str(rootfs), "useradd", "--uid", str(TRITON_UID), "--gid", str(TRITON_UID),
         "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", USER],
        progress, log, label="useradd")
    return requirements


def build(base: Base, out_dir: Path, progress: Progress) -> tuple[ArchiveInfo, float]:
    """Build the Triton image into ``out_dir``; returns (archive, seconds)."""
    paths = ensure_installed(log=progress.step)
    t0 = time.monotonic()
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = out_dir / "triton-build.log"
    rootfs = work / "triton-rootfs"
    requirements = assemble(base, paths, rootfs, progress, log)
    progress.step("diffing against the base rootfs")
    added, removed = oci_layer.diff(base.rootfs, rootfs)
    progress.step(f"writing the triton layer: {len(added)} entries, {len(removed)} whiteouts")
    layer = oci_layer.write_layer(rootfs, added, work / "triton-layer.tar.gz", whiteouts=removed,
                                  on_file=lambda i: progress.update(f"layer: {i}/{len(added)} entries"))
    history = [base_history(base),
               f"tritonserver, python backend and stub {PYTHON_VERSION} from nvidia-pytriton "
               f"{PYTRITON_VERSION}; backends/onnxruntime/model.py; pip install {' '.join(requirements)}; "
               f"useradd {USER} ({TRITON_UID})"]
    info = oci_archive.write_image(work / "triton-layout", out_dir / "tritonserver-cpu.oci.tar", NAME,
                                   [base.layer, layer], RUN_CONFIG, history)
    shutil.rmtree(work / "triton-layout", ignore_errors=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    layer.path.unlink()
    return info, round(time.monotonic() - t0, 1)


def base_history(base: Base) -> str:
    return f"Debian base {base.name} (debootstrap)"
