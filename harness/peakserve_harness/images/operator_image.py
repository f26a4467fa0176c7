"""The operator image, built from images/operator/Dockerfile by buildah (Debian's package).

buildah runs daemonless and rootful here: ``--storage-driver vfs`` (no overlay mounts needed) and
``--isolation chroot`` (no OCI runtime, no new user namespace). The Dockerfile is built as is except
for its base (see :mod:`.dockerfile`): the local Debian base is loaded into buildah's storage first.
The RUN steps reach PyPI through this machine's TLS-intercepting egress, so the host's CA bundle is
mounted into them (build time only; it is not part of the image).
"""

from __future__ import annotations

import shutil
import time
import tomllib
from pathlib import Path

from .. import debian_packages
from . import dockerfile
from .debian_base import Base
from .oci_archive import ArchiveInfo, archive_layout
from .progress import Progress, run
from .store import images_root

REPOSITORY = "ghcr.io/peakserve/peakserve-operator"
HOST_CA_DIR = Path("/etc/ssl/certs")


def image_name(repo: Path) -> str:
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    return f"{REPOSITORY}:{version}"


def buildah() -> list[str]:
    store = images_root() / "buildah"
    return ["buildah", "--storage-driver", "vfs", "--root", str(store / "root"),
            "--runroot", str(store / "run")]


def load_base(base: Base, progress: Progress, log: Path) -> None:
    """Make ``base.name`` resolvable in buildah's storage (a no-op when it is there), and drop bases
    of other keys: vfs keeps a full copy of the rootfs per layer, so stale ones cost hundreds of MB."""
    out = run([*buildah(), "images", "--format", "{{.Name}}:{{.Tag}}"], progress, log, label="buildah")
    names = out.split()
    repository = base.name.rsplit(":", 1)[0]
    for stale in (n for n in names if n.rsplit(":", 1)[0] == repository and n != base.name):
        run([*buildah(), "rmi", stale], progress, log, label="buildah rmi")
    if base.name in names:
        return
    image_id = run([*buildah(), "pull", "--quiet", f"oci-archive:{base.archive}"], progress, log,
                   label="buildah pull").split()[-1]
    run([*buildah(), "tag", image_id, base.name], progress, log, label="buildah tag")


def build(repo: Path, base: Base, out_dir: Path, progress: Progress) -> tuple[ArchiveInfo, float]:
    """Build the operator image; returns (archive, seconds)."""
    debian_packages.ensure({"buildah": "buildah"}, log=progress.step)
    t0 = time.monotonic()
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = out_dir / "operator-build.log"
    name = image_name(repo)
    load_base(base, progress, log)
    original = (repo / "images" / "operator" / "Dockerfile").read_text()
    variant = dockerfile.rebase(original, base.name)
    variant_path = work / "operator.Dockerfile"
    variant_path.write_text(variant)
    progress.step(f"Dockerfile variant: only FROM changed: {dockerfile.changed_lines(original, variant)}")
    run([*buildah(), "bud", "--isolation", "chroot", "--pull=never", "--layers=false",
         "--volume", f"{HOST_CA_DIR}:{HOST_CA_DIR}:ro",
         "-f", str(variant_path), "-t", name, str(repo)], progress, log, timeout=1800, label="buildah bud")
    layout = work / "operator-layout"
    shutil.rmtree(layout, ignore_errors=True)
    run([*buildah(), "push", "--quiet", name, f"oci:{layout}:{name}"], progress, log, label="buildah push")
    info = archive_layout(layout, out_dir / "peakserve-operator.oci.tar", name)
    shutil.rmtree(layout, ignore_errors=True)
    # The archive is the product; the copy in buildah's storage would only take space.
    # (rmi may leave it dangling; --prune drops dangling images, and this storage is ours alone)
    run([*buildah(), "rmi", name], progress, log, label="buildah rmi")
    run([*buildah(), "rmi", "--prune"], progress, log, label="buildah rmi")
    return info, round(time.monotonic() - t0, 1)
