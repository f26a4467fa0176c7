"""Run a command from an unpacked image the way a container runtime would, without one.

In new mount, PID and network namespaces: the rootfs is bind-mounted read-only (as
``readOnlyRootFilesystem: true``), with fresh /proc, tmpfs /tmp and /dev/shm (the pod's emptyDirs),
the host's /dev, and optional bind mounts (the pod's volumes); the command runs chrooted there as a
given uid:gid with exactly the image's environment and working directory (``env -i -C``). Only
loopback exists in the network namespace, so fixed ports cannot clash with the host's. ``then``
runs a host command in the same namespaces while the contained one runs (a probe), after which the
contained command is killed. Everything is torn down with the namespaces.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Spec:
    rootfs: Path
    argv: Sequence[str]
    uid: int
    gid: int
    env: Sequence[str] = ()
    workdir: str = "/"
    binds: dict[str, tuple[Path, bool]] = field(default_factory=dict)  # target -> (source, read-only)
    read_only: bool = True


def script(spec: Spec, mnt: Path, *, then: Sequence[str] | None = None, log: Path | None = None) -> str:
    """The shell script that runs inside the new namespaces (pure: easy to read and to test)."""
    q = shlex.quote
    r = q(str(mnt))
    lines = ["set -eu", "mount --make-rprivate /", f"mount --bind {q(str(spec.rootfs))} {r}"]
    if spec.read_only:
        lines.append(f"mount -o remount,bind,ro {r}")
    lines += [f"mount -t proc proc {r}/proc",
              f"mount -t tmpfs -o mode=1777 tmpfs {r}/tmp",
              f"mount --rbind /dev {r}/dev",
              f"mount -t tmpfs -o mode=1777 tmpfs {r}/dev/shm"]
    for target, (source, ro) in sorted(spec.binds.items()):
        dst = q(str(mnt) + target)
        lines.append(f"mount --bind {q(str(source))} {dst}")
        if ro:
            lines.append(f"mount -o remount,bind,ro {dst}")
    lines.append("ip link set lo up")
    run = ["chroot", f"--userspec={spec.uid}:{spec.gid}", str(mnt), "/usr/bin/env", "-i",
           "-C", spec.workdir, *spec.env, *spec.argv]
    command = " ".join(q(a) for a in run)
    if then is None:
        lines.append(f"exec {command}")
    else:
        lines += [f"{command} >{q(str(log))} 2>&1 &", "pid=$!", "set +e",
                  " ".join(q(a) for a in then), "rc=$?", "kill $pid 2>/dev/null", "wait $pid", "exit $rc"]
    return "\n".join(lines) + "\n"


def mount_points(spec: Spec) -> None:
    """Create the bind targets inside the (disposable, unpacked) rootfs: it is read-only once mounted."""
    for target in spec.binds:
        (spec.rootfs / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for d in ("proc", "tmp", "dev"):
        (spec.rootfs / d).mkdir(exist_ok=True)


def run(spec: Spec, *, timeout: float, then: Sequence[str] | None = None,
        log: Path | None = None) -> subprocess.CompletedProcess:
    mount_points(spec)
    with tempfile.TemporaryDirectory(prefix="peakserve-sandbox-") as mnt:
        text = script(spec, Path(mnt), then=then, log=log)
        return subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child",
                               "sh", "-c", text], capture_output=True, text=True, timeout=timeout)
