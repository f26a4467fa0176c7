"""Host tools from Debian's packages, installed with apt-get when missing: Prometheus, the image builders
(debootstrap, buildah) and the real node's runc and iptables all come this way."""

from __future__ import annotations

import os
import shutil
import subprocess

# Where Debian puts iptables and runc; a non-login root shell may not have them on PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def which(command: str) -> str | None:
    return shutil.which(command, path=SEARCH_PATH)


def missing(commands: dict[str, str]) -> list[str]:
    """The packages (values) of the commands (keys) that are not installed."""
    return sorted({pkg for cmd, pkg in commands.items() if which(cmd) is None})


def apt_install(packages: list[str], log=print) -> None:
    """apt-get install, as root or through `sudo -n`; the package lists are refreshed once when an install
    fails (stale lists are the usual reason)."""
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"{', '.join(packages)} missing and apt-get is not available to install them")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt-get install {' '.join(packages)} ...")
    install = [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, check=True, capture_output=True, timeout=600)
        subprocess.run(install, env=env, check=True, capture_output=True, timeout=900)


def ensure(commands: dict[str, str], log=print) -> None:
    """Install the packages of whichever commands are missing; a no-op when all are there."""
    packages = missing(commands)
    if not packages:
        return
    apt_install(packages, log)
    still = missing(commands)
    if still:
        raise RuntimeError(f"installed {packages}, yet still missing: {still}")
