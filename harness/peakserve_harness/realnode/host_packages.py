"""What the real node needs from the host that Go modules cannot give: runc and iptables (Debian's).

busybox-static gives the smoke test an image whose root filesystem is one static binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# command on PATH -> the Debian package that provides it
REQUIRED = {"runc": "runc", "iptables": "iptables"}
OPTIONAL = {"busybox": "busybox-static"}


def missing(commands: dict[str, str]) -> list[str]:
    return sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd, path=_sbin_path()) is None})


def _sbin_path() -> str:
    # iptables and runc live in /usr/sbin, which a non-login root shell may lack.
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def require_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("the real node needs root (mounts, cgroups, network namespaces, iptables); "
                           "run as root, as CI does")


def ensure_host_packages(log=print, with_optional: bool = True) -> None:
    """apt-get install whatever of REQUIRED (and OPTIONAL) is missing; a no-op when all is there."""
    wanted = {**REQUIRED, **(OPTIONAL if with_optional else {})}
    packages = missing(wanted)
    if not packages:
        return
    require_root()
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"missing {', '.join(packages)} and no apt-get to install them")
    log(f"[realnode] apt-get install {' '.join(packages)} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    still = missing(REQUIRED)
    if still:
        raise RuntimeError(f"installed, yet still missing: {', '.join(still)}")


def host_command(name: str) -> str:
    path = shutil.which(name, path=_sbin_path())
    if path is None:
        raise RuntimeError(f"{name} not found; run `python -m peakserve_harness.realnode.host_packages`")
    return path


if __name__ == "__main__":
    ensure_host_packages(lambda m: print(m, file=sys.stderr, flush=True))
