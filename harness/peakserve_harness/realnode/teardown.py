"""Undo what the real node leaves outside its processes: containers, mounts, cgroups, iptables chains,
links and the host paths the kubelet writes whatever its flags say.

Every step is best effort and idempotent, so a node that died half-way is cleaned as well as one
that stopped cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import network

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The kubelet's cgroupfs driver puts every pod under this cgroup in each controller.
KUBEPODS = "kubepods"
# KUBE- and CNI- chains are the kubelet's and portmap's; PSRN- ones are service_proxy's DNAT.
CHAIN_PREFIXES = ("KUBE-", "CNI-", "PSRN-")
BUILTIN_CHAINS = ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING")


def kubepods_cgroups() -> list[Path]:
    """Every kubepods cgroup directory, deepest first (the order rmdir needs)."""
    found: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    for controller in CGROUP_ROOT.iterdir():
        top = controller / KUBEPODS
        if top.is_dir() and not top.is_symlink():
            found.extend(p for p in top.rglob("*") if p.is_dir())
            found.append(top)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _pids_in(cgroups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for cg in cgroups:
        try:
            pids.update(int(line) for line in (cg / "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            pass
    return pids


def kill_pod_processes(timeout: float = 15) -> None:
    """SIGKILL every process in the pods' cgroups until none is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _pids_in(kubepods_cgroups())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def kill_shims(socket: Path) -> None:
    """containerd-shim-runc-v2 processes outlive containerd; ours name our socket on their command line."""
    marker = str(socket.resolve()).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and marker in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass


def unmount_under(root: Path) -> None:
    """Unmount everything mounted at or below ``root`` (the kubelet bind-mounts its root dir, and
    containerd mounts rootfs, shm and netns), deepest first, lazily when busy."""
    prefix = str(root.resolve())
    for _ in range(3):
        targets = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            target = line.split()[4].replace("\\040", " ")
            if target == prefix or target.startswith(prefix + "/"):
                targets.append(target)
        if not targets:
            return
        for target in sorted(set(targets), key=len, reverse=True):
            if subprocess.run(["umount", target], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", target], capture_output=True)


def remove_cgroups(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = kubepods_cgroups()
        if not left:
            return
        for cg in left:
            try:
                cg.rmdir()
            except OSError:
                pass
        time.sleep(0.2)


def _iptables_chains(binary: str, table: str) -> tuple[list[str], list[str]]:
    """(our chains, rules of built-in chains that jump to them) in one table."""
    proc = subprocess.run([binary, "-w", "-t", table, "-S"], capture_output=True, text=True)
    if proc.returncode != 0:
        return [], []
    chains, jumps = [], []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["-N"] and parts[1].startswith(CHAIN_PREFIXES):
            chains.append(parts[1])
        elif parts[:1] == ["-A"] and parts[1] in BUILTIN_CHAINS and "-j" in parts \
                and parts[parts.index("-j") + 1].startswith(CHAIN_PREFIXES):
            jumps.append(line)
    return chains, jumps


def remove_iptables_chains() -> None:
    """KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, CNI-HOSTPORT-*, PSRN-SERVICES and
    friends, v4 and v6."""
    for binary in ("iptables", "ip6tables"):
        if shutil.which(binary, path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            chains, jumps = _iptables_chains(binary, table)
            for rule in jumps:
                subprocess.run([binary, "-w", "-t", table, "-D", *rule.split()[1:]], capture_output=True)
            for chain in chains:
                subprocess.run([binary, "-w", "-t", table, "-F", chain], capture_output=True)
            for chain in chains:
                subprocess.run([binary, "-w", "-t", table, "-X", chain], capture_output=True)


def remove_host_paths(created: list[str], pod_logs: Path) -> None:
    """The fixed host paths the kubelet or CNI wrote: those that did not exist before start go; from
    one that did, /var/log/containers, only the links into this node's pod logs."""
    for path in created:
        p = Path(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink(missing_ok=True)
    links = Path("/var/log/containers")
    if links.is_dir():
        for link in links.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
                link.unlink(missing_ok=True)


def clean_host(socket: Path, root: Path, pod_logs: Path, created_host_paths: list[str]) -> None:
    """Everything but stopping the kubelet and containerd themselves (node.py does that first)."""
    kill_pod_processes()
    kill_shims(socket)
    unmount_under(root)
    remove_cgroups()
    network.remove_links()
    remove_iptables_chains()
    remove_host_paths(created_host_paths, pod_logs)
