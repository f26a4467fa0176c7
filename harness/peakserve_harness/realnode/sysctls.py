"""Kernel settings the kubelet and the CNI bridge change on the host, saved at start and put back at stop.

The kubelet sets vm.overcommit_memory, vm.panic_on_oom, kernel.panic and kernel.panic_on_oops (it
insists on them unless protectKernelDefaults makes it refuse to start instead); the bridge plugin
turns on IPv4 forwarding for its gateway. A dev machine should not keep them after `down`.
"""

from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")
CHANGED = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward")


def save() -> dict[str, str]:
    values = {}
    for key in CHANGED:
        try:
            values[key] = (PROC_SYS / key).read_text().strip()
        except OSError:
            pass
    return values


def restore(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = PROC_SYS / key
        try:
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
        except OSError:
            pass
