"""The node's private address: a bridge link carrying a /32 that only this machine can reach.

The kubelet refuses a loopback node IP, and a node without an address breaks logs and exec; dummy
links are refused here, a bridge is not. The CNI bridge for pods is made by the bridge plugin itself.
"""

from __future__ import annotations

import subprocess

from .layout import CNI_BRIDGE, NODE_BRIDGE


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def add_node_address(node_ip: str, bridge: str = NODE_BRIDGE) -> None:
    if not link_exists(bridge):
        _ip("link", "add", bridge, "type", "bridge")
    if f" {node_ip}/32 " not in _ip("-o", "addr", "show", "dev", bridge).stdout:
        _ip("addr", "add", f"{node_ip}/32", "dev", bridge)
    _ip("link", "set", bridge, "up")


def remove_links() -> None:
    """Both bridges; the pods' veths went with their network namespaces."""
    for name in (CNI_BRIDGE, NODE_BRIDGE):
        if link_exists(name):
            _ip("link", "del", name, check=False)
