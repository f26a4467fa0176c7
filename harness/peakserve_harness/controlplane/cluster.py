"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK, started as plain processes from the cached binaries.

State (pids, ports, logs, kubeconfig) lives in one directory, so `dev up` in one command
and `dev down` in another find each other, and tests can run clusters side by side.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

from . import binaries
from ..cache import cache_root
from ..loopback import free_port
from .certs import FRONT_PROXY_CLIENT, make_pki
from .kwok_stages import kwok_config
from .nodes import DEFAULT_NODES, KWOK_ANNOTATION, PROBED_NET_OCTETS, GpuNode, node_manifest, on_probed_net

ADMIN_TOKEN_FILE = "admin.token"
DEMO_PROCESSES = ("operator", "builds", "pods")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def default_dir() -> Path:
    return cache_root() / "dev"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _reaped(pid: int) -> int:
    """`pid`, after collecting its exit status if it is our own exited child: a zombie still answers
    kill(pid, 0), so a component started by this process would otherwise never look stopped."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass
    return pid


def _describe(node: GpuNode) -> str:
    if not node.gpus:
        return f"{node.name} (CPU)"
    probed = f", probed, pods on {node.pod_cidr}" if node.probed else ""
    return f"{node.name} ({node.product} x{node.gpus}{probed})"


class DevCluster:
    def __init__(self, state_dir: Path | None = None, log: Callable[[str], None] = print):
        self.dir = Path(state_dir or default_dir())
        self.log = log
        self.state_file = self.dir / "state.json"
        self.kubeconfig = self.dir / "kubeconfig"

    # ---- state -------------------------------------------------------------------------
    def _state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def running(self) -> bool:
        pids = self._state().get("pids", {})
        return bool(pids) and all(_alive(p) for p in pids.values())

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self._state()['ports']['apiserver']}"

    # ---- lifecycle ---------------------------------------------------------------------
    def up(self, nodes: tuple[GpuNode, ...] = DEFAULT_NODES, timeout: float = 120) -> None:
        if self.running():
            self.log(f"[dev] control plane already running ({self.server}); kubeconfig: {self.kubeconfig}")
            return
        self.down(quiet=True)
        started = time.monotonic()
        if any(n.probed for n in nodes):
            nodes = on_probed_net(nodes, self._claim_probed_net())
        found = binaries.ensure_binaries(self.log, groups=binaries.CONTROL_PLANE)
        self.dir.mkdir(parents=True, exist_ok=True)
        pki = self.dir / "pki"
        make_pki(pki)
        token = base64.b32encode(os.urandom(20)).decode().lower()
        (self.dir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        (self.dir / ADMIN_TOKEN_FILE).write_text(token)
        ports = {name: free_port() for name in ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok")}
        self._write_kubeconfig(ports["apiserver"], token, pki)
        (self.dir / "kwok.yaml").write_text(kwok_config(nodes))
        state = {"ports": ports, "pids": {}}
        for name in COMPONENTS:
            argv = [str(found[name]), *self._args(name, ports, pki)]
            logf = open(self.dir / f"{name}.log", "ab")
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=self.dir)
            state["pids"][name] = proc.pid
            self.state_file.write_text(json.dumps(state, indent=2))
            if name == "etcd":
                self._wait_tcp(ports["etcd"], timeout, "etcd")
            if name == "kube-apiserver":
                self._wait_ready(timeout)
        self._register_nodes(nodes, timeout)
        self.log(f"[dev] control plane up in {time.monotonic() - started:.1f}s at {self.server}")
        self.log(f"[dev] export KUBECONFIG={self.kubeconfig}")

    def down(self, quiet: bool = False) -> None:
        if (self.dir / "real-node").is_dir():
            # Before the apiserver goes: the node's containers, mounts, cgroups and links outlive it.
            from ..realnode.node import RealNode

            RealNode(self, log=self.log).stop(quiet=quiet)
        pids = self._state().get("pids", {})
        # `make demo` runs the operator, the job runner and the pod agent in the background and records
        # their pids.
        for extra in DEMO_PROCESSES:
            pid_file = self.dir / f"{extra}.pid"
            if pid_file.exists():
                pids = {extra: int(pid_file.read_text().strip()), **pids}
                pid_file.unlink()
        for name in (*DEMO_PROCESSES, *reversed(COMPONENTS)):
            pid = pids.get(name)
            if pid and _alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + 15
        while any(_alive(_reaped(p)) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids.values():
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.state_file.exists():
            self.state_file.unlink()
        self._release_probed_net()
        # Like `kind delete cluster`: the next `up` starts from an empty cluster.
        shutil.rmtree(self.dir / "etcd-data", ignore_errors=True)
        if pids and not quiet:
            self.log("[dev] control plane stopped")

    # ---- one component at a time (the fault suite) -------------------------------------------
    def pid(self, name: str) -> int | None:
        return self._state().get("pids", {}).get(name)

    def stop_component(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop one component (its whole process group) with `sig`, SIGKILL after `timeout` seconds; the
        others keep running. Its state (etcd's data, ports, certificates) stays for start_component."""
        if name not in COMPONENTS:
            raise ValueError(f"{name!r} is not one of {COMPONENTS}")
        pid = self.pid(name)
        if not pid:
            return
        deadline = time.monotonic() + timeout
        for signum in (sig, signal.SIGKILL):
            try:
                os.killpg(pid, signum)
            except OSError:
                pass
            while time.monotonic() < deadline and _alive(_reaped(pid)):
                time.sleep(0.05)
            if not _alive(_reaped(pid)):
                break
            deadline = time.monotonic() + 10
        if _alive(_reaped(pid)):
            raise RuntimeError(f"{name} (pid {pid}) did not stop")

    def start_component(self, name: str, timeout: float = 120) -> float:
        """Start one stopped component again with the arguments `up` gave it (same ports, data and
        certificates) and wait until it serves: etcd listens, kube-apiserver answers /readyz. Returns
        the seconds that took."""
        if name not in COMPONENTS:
            raise ValueError(f"{name!r} is not one of {COMPONENTS}")
        state = self._state()
        pid = state.get("pids", {}).get(name)
        if pid and _alive(_reaped(pid)):
            raise RuntimeError(f"{name} is still running (pid {pid})")
        started = time.monotonic()
        argv = [str(binaries.binary_path(name)), *self._args(name, state["ports"], self.dir / "pki")]
        with open(self.dir / f"{name}.log", "ab") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=self.dir)
        state["pids"][name] = proc.pid
        self.state_file.write_text(json.dumps(state, indent=2))
        if name == "etcd":
            self._wait_tcp(state["ports"]["etcd"], timeout, "etcd")
        if name == "kube-apiserver":
            self._wait_ready(timeout)
        return time.monotonic() - started

    def restart_component(self, name: str, sig: int = signal.SIGTERM, down_for: float = 0.0,
                          timeout: float = 120, grace: float = 30) -> float:
        """stop_component (SIGKILL after `grace` seconds), `down_for` seconds of absence, start_component;
        returns the seconds from the stop signal until the component serves again."""
        started = time.monotonic()
        self.stop_component(name, sig, timeout=grace)
        time.sleep(down_for)
        self.start_component(name, timeout)
        return time.monotonic() - started

    # ---- probed nodes' loopback network --------------------------------------------------
    # Pod IPs of probed nodes are real loopback addresses and pods bind fixed ports (8000-8002), so
    # two clusters on one host (parallel test sessions) must not share a network. Each claims a
    # 127.X.0.0/16 in a directory shared by all of them; a claim is void once neither the process
    # that made it nor the cluster it names is alive.
    @staticmethod
    def _claims_dir() -> Path:
        path = cache_root() / "probed-nets"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _claim_probed_net(self) -> int:
        claims = self._claims_dir()
        with open(claims / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for octet in PROBED_NET_OCTETS:
                claim = claims / str(octet)
                try:
                    owner = json.loads(claim.read_text())
                except (OSError, ValueError):
                    owner = None
                if owner and owner.get("dir") != str(self.dir.resolve()) and (
                        (owner.get("pid") and _alive(owner["pid"])) or DevCluster(Path(owner["dir"])).running()):
                    continue
                claim.write_text(json.dumps({"dir": str(self.dir.resolve()), "pid": os.getpid()}))
                return octet
        raise RuntimeError(f"every 127.X.0.0/16 for probed nodes is held by a running dev cluster "
                           f"(claims in {claims})")

    def _release_probed_net(self) -> None:
        claims = self._claims_dir()
        with open(claims / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for claim in claims.glob("[0-9]*"):
                try:
                    if json.loads(claim.read_text()).get("dir") == str(self.dir.resolve()):
                        claim.unlink()
                except (OSError, ValueError):
                    pass

    # ---- helpers -----------------------------------------------------------------------
    def _args(self, name: str, ports: dict[str, int], pki: Path) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        if name == "etcd":
            peer = f"http://127.0.0.1:{ports['etcd_peer']}"
            client = f"http://127.0.0.1:{ports['etcd']}"
            return [f"--data-dir={self.dir / 'etcd-data'}", f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}", f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=default={peer}",
                    "--unsafe-no-fsync=true", "--log-level=warn"]
        if name == "kube-apiserver":
            return [f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                    "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                    f"--secure-port={ports['apiserver']}",
                    f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--client-ca-file={pki / 'ca.crt'}",
                    f"--token-auth-file={self.dir / 'tokens.csv'}",
                    "--authorization-mode=Node,RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki / 'sa.key'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    # The default endpoint reconciler rejects a loopback advertise address.
                    "--endpoint-reconciler-type=none",
                    "--allow-privileged=true", "--event-ttl=1h",
                    # The real node's Hostname does not resolve; its InternalIP is its private /32
                    # (logs, exec). KWOK nodes are never dialled.
                    "--kubelet-preferred-address-types=InternalIP,Hostname",
                    f"--cert-dir={pki}",
                    # The aggregation layer (custom.metrics.k8s.io from prometheus-adapter): the
                    # apiserver proxies with the front-proxy client certificate and passes the
                    # caller's identity in these headers, which extension servers trust only
                    # from that CA and CN (they read it all from kube-system's
                    # extension-apiserver-authentication ConfigMap).
                    f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                    f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-username-headers=X-Remote-User",
                    f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                    f"--proxy-client-key-file={pki / 'front-proxy-client.key'}"]
        if name == "kube-controller-manager":
            return [f"--kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
                    f"--secure-port={ports['kcm']}", "--leader-elect=false",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}", f"--cert-dir={pki / 'kcm'}",
                    "--use-service-account-credentials=false",
                    "--kube-api-qps=200", "--kube-api-burst=400",
                    "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
                    "--horizontal-pod-autoscaler-sync-period=5s"]
        if name == "kube-scheduler":
            return [f"--kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
                    f"--secure-port={ports['scheduler']}", "--leader-elect=false",
                    f"--cert-dir={pki / 'scheduler'}"]
        if name == "kwok":
            return [f"--kubeconfig={kubeconfig}", "--manage-all-nodes=false",
                    f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
                    "--cidr=10.244.0.1/16", "--node-ip=10.240.0.1", "--node-lease-duration-seconds=40",
                    f"--server-address=127.0.0.1:{ports['kwok']}",
                    f"--config={self.dir / 'kwok.yaml'}"]
        raise ValueError(name)

    def _write_kubeconfig(self, port: int, token: str, pki: Path) -> None:
        ca = base64.b64encode((pki / "ca.crt").read_bytes()).decode()
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "peakserve-dev",
            "clusters": [{"name": "peakserve-dev", "cluster": {
                "server": f"https://127.0.0.1:{port}", "certificate-authority-data": ca}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "peakserve-dev", "context": {"cluster": "peakserve-dev", "user": "admin"}}],
        }, indent=2))

    def _wait_tcp(self, port: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}; see {self.dir}/{what}.log")

    def _get(self, path: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
        req = urllib.request.Request(self.server + path, headers={
            "Authorization": f"Bearer {(self.dir / ADMIN_TOKEN_FILE).read_text()}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            return 0, b""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._get("/readyz")[0] == 200:
                return
            time.sleep(0.3)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s; see {self.dir}/kube-apiserver.log")

    def _register_nodes(self, nodes: tuple[GpuNode, ...], timeout: float) -> None:
        from peakserve.cluster.client import Kube

        kube = Kube.from_kubeconfig(self.kubeconfig)
        deadline = time.monotonic() + timeout
        # The default ServiceAccount appears once the controller-manager runs; pods need it.
        while time.monotonic() < deadline and self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] != 200:
            time.sleep(0.3)
        for node in nodes:
            kube.create("/api/v1/nodes", node_manifest(node))
        while time.monotonic() < deadline:
            ready = [n for n in json.loads(self._get("/api/v1/nodes")[1]).get("items", [])
                     if any(c["type"] == "Ready" and c["status"] == "True"
                            for c in n.get("status", {}).get("conditions", []))]
            if len(ready) >= len(nodes):
                self.log(f"[dev] {len(ready)} simulated nodes Ready: "
                         + ", ".join(_describe(n) for n in nodes))
                return
            time.sleep(0.3)
        raise RuntimeError(f"KWOK did not make the nodes Ready; see {self.dir}/kwok.log")
