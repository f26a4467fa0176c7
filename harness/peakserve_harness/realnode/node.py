"""RealNode: one real worker node (kubelet + containerd + runc + CNI) joined to a DevCluster.

start() lays out its directory, puts the node's /32 on a private bridge, signs the kubelet's client
certificate with the cluster CA, starts containerd, imports the pause image, provides the
``kubernetes`` Service to pods (service_proxy.py), starts the kubelet and waits for the Node to be
Ready. stop() undoes all of it (teardown.py), also after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit
from pathlib import Path
from typing import Callable

from ..cache import file_lock
from . import binaries, config, network, node_images, service_proxy, sysctls, teardown
from .fake_gpu_plugin import FAKE_GPU_LABEL, RESOURCE
from .host_packages import ensure_host_packages, host_command, require_root
from .layout import APISERVER_PROXY_PORT, HOST_PATHS, NODE_LABEL, NODE_NAME, POD_GATEWAY, NodeLayout
from .node_cert import node_client_cert

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# One real node per machine: its bridges, addresses, DNAT chain and the kubepods cgroups are host-wide,
# and start() first cleans what a crashed run left, which would wreck another session's node. A second
# session waits here for the first one's stop() (or its death: the kernel drops a dead holder's flock).
HOST_LOCK = Path("/run/peakserve-real-node.lock")
HOST_LOCK_WAIT_S = 1800


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own exited child, or it stays a zombie that looks alive
    except (ChildProcessError, OSError):
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _stop_group(pid: int, grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except OSError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            return


def _overlay_works(scratch: Path) -> bool:
    """containerd's default snapshotter needs overlay mounts; some sandboxes refuse them."""
    dirs = {n: scratch / n for n in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    ok = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(dirs["merged"])],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(dirs["merged"])], capture_output=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return ok


class RealNode:
    def __init__(self, cluster, name: str = NODE_NAME, log: Callable[[str], None] | None = None,
                 fake_gpus: int = 2):
        self.cluster = cluster
        # nvidia.com/gpu devices with no hardware, from a real device plugin; 0 runs no plugin.
        self.fake_gpus = fake_gpus
        self.layout = NodeLayout(Path(cluster.dir) / "real-node", name=name, pause_version=binaries.PAUSE)
        self.log = log or cluster.log
        self.ready_seconds: float | None = None
        self.build_seconds: dict[str, float] = {}
        self._host_lock = contextlib.ExitStack()

    @property
    def name(self) -> str:
        return self.layout.name

    # ---- state --------------------------------------------------------------------------
    def _state(self) -> dict:
        try:
            return json.loads(self.layout.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict) -> None:
        self.layout.state_file.write_text(json.dumps(state, indent=2))

    def running(self) -> bool:
        pids = self._state().get("pids", {})
        return {"containerd", "kubelet"} <= set(pids) and all(_alive(p) for p in pids.values())

    # ---- start --------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> float:
        """Start the node and wait until it is Ready; return the seconds from start to Ready."""
        require_root()
        ensure_host_packages(self.log)
        self.build_seconds = binaries.ensure_node_binaries(self.log)
        if self.running():
            self.log(f"[realnode] {self.name} already running")
            return 0.0
        self.log(f"[realnode] waiting for {HOST_LOCK} (one real node per machine)")
        self._host_lock.enter_context(file_lock(HOST_LOCK, timeout_s=HOST_LOCK_WAIT_S, poll_s=2))
        self.stop(quiet=True, release=False)  # whatever a crashed run left
        started = time.monotonic()
        lay = self.layout
        for d in (lay.containerd_root, lay.containerd_state, lay.cni_conf_dir, lay.cni_ipam_dir,
                  lay.kubelet_root, lay.pki, lay.pod_logs):
            d.mkdir(parents=True, exist_ok=True)
        state = {"pids": {}, "created_host_paths": [p for p in HOST_PATHS if not os.path.lexists(p)],
                 "sysctls": sysctls.save()}
        self._save(state)
        network.add_node_address(lay.node_ip)
        snapshotter = "overlayfs" if _overlay_works(lay.root / "overlay-probe") else "native"
        self._write_configs(snapshotter)
        env = {**os.environ, "PATH": f"{binaries.containerd_dir()}:{SYSTEM_PATH}"}
        state["pids"]["containerd"] = self._spawn("containerd", [
            str(binaries.containerd_dir() / "containerd"), "--config", str(lay.containerd_config)], env)
        self._save(state)
        self._wait(lambda: lay.containerd_socket.exists(), 30, "containerd", "its socket")
        node_images.import_pause(binaries.containerd_dir() / "ctr", lay.containerd_socket,
                                 binaries.pause_dir() / "pause", lay.sandbox_image, lay.root)
        self._start_service_proxy(state, env)
        labels = dict([NODE_LABEL, FAKE_GPU_LABEL] if self.fake_gpus else [NODE_LABEL])
        state["pids"]["kubelet"] = self._spawn("kubelet", [
            str(binaries.kubelet_dir() / "kubelet"), *config.kubelet_args(lay, labels)], env)
        self._save(state)
        self._wait(self._node_ready, timeout, "kubelet", f"Node {self.name} to be Ready")
        self.ready_seconds = time.monotonic() - started
        if self.fake_gpus:
            state["pids"]["fake-gpu-plugin"] = self._spawn("fake-gpu-plugin", [
                str(binaries.fake_gpu_plugin_dir() / "fake-gpu-plugin"), f"-devices={self.fake_gpus}",
                f"-resource={RESOURCE}"], env)
            self._save(state)
            self._wait(lambda: self._capacity(RESOURCE) == str(self.fake_gpus), 60, "fake-gpu-plugin",
                       f"{self.fake_gpus} {RESOURCE} in the node's capacity")
        gpus = f", {self.fake_gpus} fake {RESOURCE} after {time.monotonic() - started:.1f}s" if self.fake_gpus else ""
        self.log(f"[realnode] {self.name} Ready in {self.ready_seconds:.1f}s (kubelet {lay.node_ip}:10250, "
                 f"containerd {snapshotter}{gpus}); logs in {lay.root}")
        return self.ready_seconds

    def _start_service_proxy(self, state: dict, env: dict[str, str]) -> None:
        """Before the kubelet, so that the first pod already reaches the apiserver at 10.96.0.1:443."""
        listen = (POD_GATEWAY, APISERVER_PROXY_PORT)
        apiserver_port = urlsplit(self.cluster.server).port
        state["pids"]["service-proxy"] = self._spawn("service-proxy", [
            sys.executable, "-m", "peakserve_harness.realnode.service_proxy",
            f"--listen={listen[0]}:{listen[1]}", f"--to=127.0.0.1:{apiserver_port}"], env)
        self._save(state)
        service_proxy.add_dnat(listen)

    def _write_configs(self, snapshotter: str) -> None:
        lay = self.layout
        pki = Path(self.cluster.dir) / "pki"
        crt, key = node_client_cert(lay.pki, lay.name, pki)
        lay.kubelet_kubeconfig.write_text(config.kubeconfig(self.cluster.server, (pki / "ca.crt").read_bytes(),
                                                            crt, key, f"system:node:{lay.name}"))
        lay.containerd_config.write_text(config.containerd_toml(lay, host_command("runc"), binaries.cni_dir(),
                                                                snapshotter))
        (lay.cni_conf_dir / "10-peakserve.conflist").write_text(config.cni_conflist(lay))
        lay.kubelet_config.write_text(config.kubelet_config(lay))
        lay.resolv_conf.write_text(config.resolv_conf())

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> int:
        # Popen execs the binary itself (no shell), so the recorded pid is the daemon's own.
        with open(self.layout.root / f"{name}.log", "ab") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=self.layout.root,
                                    start_new_session=True)
        return proc.pid

    def _wait(self, done: Callable[[], bool], timeout: float, component: str, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            for name, pid in self._state().get("pids", {}).items():
                if not _alive(pid):
                    raise RuntimeError(f"{name} exited while waiting for {what}:\n{self.log_tail(name)}")
            time.sleep(0.5)
        raise RuntimeError(f"no {what} after {timeout:.0f}s:\n{self.log_tail(component)}")

    def log_tail(self, component: str, lines: int = 30) -> str:
        path = self.layout.root / f"{component}.log"
        if not path.exists():
            return f"({path} missing)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _node(self) -> dict:
        status, body = self.cluster._get(f"/api/v1/nodes/{self.name}")
        return json.loads(body) if status == 200 else {}

    def _node_ready(self) -> bool:
        conditions = self._node().get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _capacity(self, resource: str) -> str | None:
        return self._node().get("status", {}).get("capacity", {}).get(resource)

    # ---- stop ---------------------------------------------------------------------------
    def stop(self, quiet: bool = False, release: bool = True) -> None:
        """Stop the kubelet and containerd, kill every pod, and undo what they did to the host."""
        try:
            self._stop(quiet)
        finally:
            if release:
                self._host_lock.close()

    def _stop(self, quiet: bool) -> None:
        state = self._state()
        if not state and not self.layout.root.exists():
            return
        pids = state.get("pids", {})
        if pids.get("fake-gpu-plugin"):
            _stop_group(pids["fake-gpu-plugin"], grace=5)
        if pids.get("kubelet"):
            _stop_group(pids["kubelet"], grace=10)
        teardown.kill_pod_processes()
        if pids.get("containerd"):
            _stop_group(pids["containerd"], grace=10)
        if pids.get("service-proxy"):
            _stop_group(pids["service-proxy"], grace=2)
        service_proxy.remove_dnat()
        lay = self.layout
        teardown.clean_host(lay.containerd_socket, lay.root, lay.pod_logs, state.get("created_host_paths", []))
        sysctls.restore(state.get("sysctls", {}))
        for d in (lay.containerd_root, lay.containerd_state, lay.kubelet_root, lay.cni_ipam_dir):
            shutil.rmtree(d, ignore_errors=True)
        self._delete_node_object()
        lay.state_file.unlink(missing_ok=True)
        if state and not quiet:
            self.log(f"[realnode] {self.name} stopped and cleaned up")

    def _delete_node_object(self) -> None:
        """A stopped node would linger NotReady with its pods; drop it while the apiserver still answers."""
        if not self.cluster.running():
            return
        try:
            from peakserve.cluster.client import Kube

            Kube.from_kubeconfig(self.cluster.kubeconfig).delete("v1", "Node", None, self.name)
        except Exception:  # noqa: BLE001 - best effort; `down` removes the whole cluster anyway
            pass
