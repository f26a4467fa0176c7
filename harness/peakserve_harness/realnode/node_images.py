"""Images for the real node, made here and imported into containerd's k8s.io namespace (no registry).

- the sandbox (pause) image, under the name containerd's CRI is configured with;
- a busybox image from Debian's busybox-static, for smoke tests: one static binary and its applets.

Both are written by the images package's OCI writer; ``import_archive`` takes any OCI archive (the
operator and Triton images too).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..images.oci_archive import write_rootfs_image
from ..images.oci_image import RunConfig

BUSYBOX_IMAGE = "peakserve.local/busybox:1"
BUSYBOX_APPLETS = ("sh", "cat", "echo", "sleep", "httpd", "ls", "mkdir", "wget", "true", "env", "id")
PATH_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
CREATED_BY = "peakserve_harness.realnode.node_images"


def import_archive(ctr: Path, socket: Path, archive: Path, timeout: float = 600) -> None:
    # ctr needs the absolute socket path; k8s.io is the namespace the CRI plugin reads. Import unpacks
    # into the default snapshotter, the one the CRI plugin is configured with.
    proc = subprocess.run([str(ctr), "--address", str(socket.resolve()), "-n", "k8s.io", "images", "import",
                           str(archive)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive} failed: {proc.stdout}\n{proc.stderr}")


def import_pause(ctr: Path, socket: Path, pause_binary: Path, name: str, workdir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        shutil.copy2(pause_binary, rootfs / "pause")
        archive = Path(tmp) / "pause.tar"
        # 65535: the user upstream's pause image runs as.
        write_rootfs_image(rootfs, archive, name, RunConfig(env=PATH_ENV, entrypoint=("/pause",), user="65535:65535"),
                           CREATED_BY)
        import_archive(ctr, socket, archive)


def import_busybox(ctr: Path, socket: Path, busybox: Path, workdir: Path, name: str = BUSYBOX_IMAGE) -> str:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        for folder in ("bin", "tmp", "etc", "www"):
            (rootfs / folder).mkdir(parents=True)
        (rootfs / "tmp").chmod(0o1777)
        shutil.copy2(busybox, rootfs / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (rootfs / "www" / "index.html").write_text("ok\n")
        archive = Path(tmp) / "busybox.tar"
        write_rootfs_image(rootfs, archive, name, RunConfig(env=PATH_ENV, entrypoint=("/bin/sh",)), CREATED_BY)
        import_archive(ctr, socket, archive)
    return name
