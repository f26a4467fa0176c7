"""Host tools the image builds need, installed from Debian's packages when missing."""

from __future__ import annotations

import shutil
import subprocess

# command -> Debian package
DEBOOTSTRAP = {"debootstrap": "debootstrap"}
BUILDAH = {"buildah": "buildah"}


def missing(commands: dict[str, str]) -> list[str]:
    return sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None})


def ensure(commands: dict[str, str], log=print) -> None:
    """apt-get install the packages of the commands that are not on PATH (needs root)."""
    packages = missing(commands)
    if not packages:
        return
    log(f"[images] apt-get install {' '.join(packages)}")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        # Stale package lists are the usual reason: refresh them once and retry.
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True, timeout=600)
        subprocess.run(install, env=env, check=True, capture_output=True, timeout=900)
    still = missing(commands)
    if still:
        raise RuntimeError(f"installed {packages} but still missing: {still}")
