"""What the real node needs from the host that Go modules cannot give: runc and iptables (Debian's).

busybox-static gives the smoke test an image whose root filesystem is one static binary.
"""

from __future__ import annotations

import os
import sys

from .. import debian_packages

# command on PATH -> the Debian package that provides it
REQUIRED = {"runc": "runc", "iptables": "iptables"}
OPTIONAL = {"busybox": "busybox-static"}


def require_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("the real node needs root (mounts, cgroups, network namespaces, iptables); "
                           "run as root, as CI does")


def ensure_host_packages(log=print, with_optional: bool = True) -> None:
    """apt-get install whatever of REQUIRED (and OPTIONAL) is missing; a no-op when all is there."""
    wanted = {**REQUIRED, **(OPTIONAL if with_optional else {})}
    if debian_packages.missing(wanted):
        require_root()
    debian_packages.ensure(wanted, log=lambda m: log(f"[realnode] {m}"))


def host_command(name: str) -> str:
    path = debian_packages.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found; run `python -m peakserve_harness.realnode.host_packages`")
    return path


if __name__ == "__main__":
    ensure_host_packages(lambda m: print(m, file=sys.stderr, flush=True))
