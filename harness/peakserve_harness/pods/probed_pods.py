"""The pod agent of the probed nodes: a real tritonserver on each pod's own IP, and readiness from it.

On probed nodes (:mod:`peakserve_harness.controlplane.nodes`) KWOK gives a pod a loopback IP from the
node's ``spec.podCIDR`` and makes it Running but not Ready. For each such pod this agent does what the
kubelet would do with the pod's ``triton`` container:

1. builds the model repository the container would see, from the pod spec: the ConfigMap mounted at
   ``/models/NAME/config.pbtxt`` (read from the API) and the model version directory mounted at
   ``/models/NAME/VERSION`` (a hostPath, or a PVC bound to a hostPath PV), converted for the local
   python-backend server (:mod:`peakserve_harness.triton.python_backend`);
2. starts a :class:`~peakserve_harness.triton.server.LocalTriton` bound to the pod IP on the
   container's ports (8000 http, 8001 grpc, 8002 metrics);
3. plays the probes: the pod turns Ready (conditions, ``containerStatuses[].ready``/``started``,
   patched on the status subresource) once ``/v2/health/ready`` answers 200, and unready after three
   failed probes in a row. A server that exits, or is not ready within the container's startup
   probe budget, leaves ``lastState.terminated`` (exit code and Triton's error lines), a
   ``CrashLoopBackOff`` waiting state and one more ``restartCount``; it is started again after a
   back-off of 10 s, doubling up to 80 s;
4. stops the server when the pod is deleted or gone, and publishes the running servers' metrics
   ports as Prometheus targets ``("PODIP:8002", {"namespace": ns, "pod": name})``, like
   :class:`~peakserve_harness.pods.triton_pods.PodServers`.

What it cannot do, and says so in the container's waiting state (reason CreateContainerConfigError,
message starting "local pod agent:") while the pod stays unready: init containers (the ``s3://``
model fetch), volumes other than ConfigMap/hostPath/PVC/emptyDir under the repository, containers
other than tritonserver, pod IPs outside 127.0.0.0/8. A missing ConfigMap or host directory is
retried after the back-off, as the kubelet retries. Pods of Jobs are left to KWOK and the job runner.

One polling thread (0.5 s by default, a daemon); servers start without blocking it. ``stop()`` stops
every server, marks the pods that are still there unready, and publishes no targets.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peakserve.api.timestamps import rfc3339
from peakserve.cluster.client import ApiException, Kube

from ..controlplane.nodes import PROBED_LABEL, PROBED_VALUE
from ..triton.python_backend import UnsupportedModel, local_repository
from ..triton.server import LocalTriton
from .job_pods import UnsupportedPod, host_path
from .triton_pods import Target

log = logging.getLogger("peakserve.probed-pods")

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
MODEL_ROOT = "/models"
MESSAGE_LIMIT = 4096
AGENT = "local pod agent"

# Pod states, as this agent sees them.
NEW = "new"                    # not started yet
STARTING = "starting"          # server process up, not ready yet (startup probe)
RUNNING = "running"            # was ready once; readiness follows the probe
BACKOFF = "backoff"            # the server exited or never became ready: wait, then start again
CONFIG_ERROR = "config-error"  # the repository could not be built yet (retried after the back-off)
UNSUPPORTED = "unsupported"    # needs a real node; never retried


class ConfigError(RuntimeError):
    """Something the pod refers to is missing (a ConfigMap, a key, a host directory): may heal."""


@dataclass
class _Pod:
    namespace: str
    name: str
    uid: str
    ip: str
    dir: Path
    obj: dict[str, Any]
    state: str = NEW
    container: str = "triton"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    repository: Path | None = None
    server: LocalTriton | None = None
    ready: bool = False
    started_at: str = ""
    start_mono: float = 0.0
    startup_timeout: float = 120.0
    readiness_failures: int = 0
    failure_threshold: int = 3
    restarts: int = 0
    backoff: float = 0.0
    next_start: float = 0.0
    waiting: dict[str, str] | None = None
    last_terminated: dict[str, Any] | None = None
    reported: tuple | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def labels(self) -> dict[str, str]:
        return self.obj["metadata"].get("labels") or {}


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma-separated."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _exit_code(code: int | None) -> int:
    if code is None:
        return 137
    return 128 - code if code < 0 else code  # killed by a signal: 128 + signal, as the kubelet reports


class ProbedPods:
    """Real tritonservers for the Triton pods on probed nodes, and their readiness; a context manager.

    ``namespace``: only pods there (None: all namespaces). ``on_targets``: called with the Prometheus
    targets whenever they change (``MetricsStack.set_targets``). ``env``: extra variables for the
    servers (e.g. ``PEAKSERVE_SIMULATED_GPU_MS``).
    """

    def __init__(self, kube: Kube, workdir: Path, *, namespace: str | None = None,
                 on_targets: Callable[[list[Target]], None] | None = None,
                 env: dict[str, str] | None = None, interval: float = 0.5,
                 restart_backoff: float = 10.0, max_backoff: float = 80.0,
                 default_startup_timeout: float = 120.0, grace: float = 5.0):
        self.kube, self.workdir, self.namespace = kube, Path(workdir), namespace
        self.on_targets = on_targets
        self.env = {**os.environ, **(env or {})}
        self.interval, self.restart_backoff, self.max_backoff = interval, restart_backoff, max_backoff
        self.default_startup_timeout = default_startup_timeout
        self._pods: dict[str, _Pod] = {}   # by pod uid
        self.grace = grace
        self._draining: list[tuple[float, _Pod]] = []  # (stop at, pod) of pods that are gone
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._targets: list[Target] | None = None

    # ------------------------------------------------------------------ observing
    def _probed_nodes(self) -> list[str]:
        nodes = self.kube.call("GET", "/api/v1/nodes",
                               query=[("labelSelector", f"{PROBED_LABEL}={PROBED_VALUE}")]).get("items", [])
        return sorted(n["metadata"]["name"] for n in nodes)

    def _list(self) -> dict[str, dict[str, Any]]:
        """Running, not deleted, non-Job pods with an IP on probed nodes, by uid."""
        path = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        found: dict[str, dict[str, Any]] = {}
        for node in self._probed_nodes():
            for pod in self.kube.call("GET", path, query=[("fieldSelector", f"spec.nodeName={node}")]).get("items", []):
                meta, status = pod["metadata"], pod.get("status") or {}
                if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
                    continue
                if any(ref.get("kind") == "Job" for ref in meta.get("ownerReferences") or []):
                    continue  # KWOK completes Job pods, or the job runner runs them
                found[meta["uid"]] = pod
        return found

    # ------------------------------------------------------------------ the loop
    def sync(self) -> None:
        """One pass: stop servers of pods that are gone, advance every pod, report, publish targets."""
        live = self._list()
        with self._lock:
            # A gone pod leaves the endpoints at once but its server drains for `grace` seconds, as a
            # terminating container finishes the requests already sent to it (kube-proxy stops sending).
            # 5 s is the rollout load's request timeout: on 2 busy cores a request may take that long.
            now = time.monotonic()
            self._draining += [(now + self.grace, self._pods.pop(uid)) for uid in list(self._pods) if uid not in live]
            done = [pod for until, pod in self._draining if until <= now]
            self._draining = [(until, pod) for until, pod in self._draining if pod not in done]
            self._stop_servers(done, reason="gone")
            # KWOK reuses a gone pod's IP at once. The new pod's server waits for the old one's drain: a
            # client that still sends to the IP then reaches a server with the model loaded, not one loading it.
            draining = {pod.ip for _, pod in self._draining}
            for uid, obj in live.items():
                pod = self._pods.get(uid)
                if pod is None:
                    pod = self._pods[uid] = self._new_pod(obj)
                pod.obj = obj
                try:
                    if not (pod.state == NEW and pod.ip in draining):
                        self._advance(pod)
                    self._report(pod)
                except ApiException as err:
                    log.info("pod %s: status not written this pass (%s)", pod.key, err.status)
            targets = sorted((f"{p.ip}:{p.ports['metrics']}", {"namespace": p.namespace, "pod": p.name})
                             for p in self._pods.values() if p.server is not None and p.server.running)
        self._publish(targets)

    def _publish(self, targets: list[Target]) -> None:
        if targets != self._targets and self.on_targets is not None:
            self.on_targets(targets)
        self._targets = targets

    def _new_pod(self, obj: dict[str, Any]) -> _Pod:
        meta = obj["metadata"]
        pod = _Pod(meta["namespace"], meta["name"], meta["uid"], obj["status"]["podIP"],
                   self.workdir / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}", obj,
                   startup_timeout=self.default_startup_timeout)
        try:
            container = self._triton_container(obj)
        except UnsupportedPod as err:
            self._unsupported(pod, str(err))
            return pod
        pod.container = container["name"]
        for port in container.get("ports") or []:
            if port.get("name") in pod.ports:
                pod.ports[port["name"]] = int(port["containerPort"])
        startup = container.get("startupProbe")
        if startup:
            pod.startup_timeout = (startup.get("initialDelaySeconds", 0)
                                   + startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3))
        pod.failure_threshold = (container.get("readinessProbe") or {}).get("failureThreshold", 3)
        if ipaddress.ip_address(pod.ip) not in LOOPBACK:
            self._unsupported(pod, f"pod IP {pod.ip} is not a loopback address this host can bind")
        return pod

    @staticmethod
    def _triton_container(obj: dict[str, Any]) -> dict[str, Any]:
        spec = obj["spec"]
        if spec.get("initContainers"):
            names = [c["name"] for c in spec["initContainers"]]
            raise UnsupportedPod(f"init containers {names} (an s3:// model fetch) need a real cluster")
        for container in spec["containers"]:
            if container["name"] == "triton" or (container.get("command") or [""])[0] == "tritonserver":
                return container
        raise UnsupportedPod("no tritonserver container in the pod")

    def _unsupported(self, pod: _Pod, why: str) -> None:
        pod.state, pod.ready = UNSUPPORTED, False
        pod.waiting = {"reason": "CreateContainerConfigError", "message": f"{AGENT}: {why}"}
        log.warning("pod %s: %s; it stays unready", pod.key, why)

    def _advance(self, pod: _Pod) -> None:
        now = time.monotonic()
        if pod.state == UNSUPPORTED:
            return
        if pod.state in (BACKOFF, CONFIG_ERROR) and now < pod.next_start:
            return
        if pod.state in (NEW, BACKOFF, CONFIG_ERROR):
            self._start(pod, now)
            return
        server = pod.server
        assert server is not None
        if not server.running:
            self._crashed(pod, "tritonserver exited" + (" before it was ready" if pod.state == STARTING else ""))
            return
        if pod.state == STARTING:
            if server.is_ready() and server.is_ours():
                pod.state, pod.ready, pod.readiness_failures = RUNNING, True, 0
                log.info("pod %s: tritonserver ready on %s after %.1fs", pod.key, server.http_address,
                         now - pod.start_mono)
            elif now - pod.start_mono > pod.startup_timeout:
                self._crashed(pod, f"tritonserver was not ready within {pod.startup_timeout:.0f}s "
                                   "(the container's startup probe)")
            return
        if server.is_ready():
            pod.readiness_failures, pod.ready = 0, True
        else:
            pod.readiness_failures += 1
            if pod.ready and pod.readiness_failures >= pod.failure_threshold:
                log.warning("pod %s: readiness probe failed %d times", pod.key, pod.readiness_failures)
                pod.ready = False

    def _start(self, pod: _Pod, now: float) -> None:
        if pod.repository is None:
            try:
                pod.repository = self._prepare(pod)
            except UnsupportedPod as err:
                self._unsupported(pod, str(err))
                return
            except (ConfigError, UnsupportedModel, OSError) as err:
                message = f"{AGENT}: {err}"
                if (pod.waiting or {}).get("message") != message:
                    log.warning("pod %s: %s (retried in %.0fs)", pod.key, err, self.restart_backoff)
                pod.state, pod.ready = CONFIG_ERROR, False
                pod.waiting = {"reason": "CreateContainerConfigError", "message": message}
                pod.next_start = now + self.restart_backoff
                return
        pod.started_at, pod.start_mono, pod.readiness_failures = rfc3339(), now, 0
        pod.server = LocalTriton(pod.repository, workdir=pod.dir / "server", env=self.env, host=pod.ip,
                                 ports=(pod.ports["http"], pod.ports["grpc"], pod.ports["metrics"]))
        try:
            pod.server.start()
        except Exception as err:  # noqa: BLE001 - e.g. no tritonserver installed: like a failed container start
            pod.state = STARTING
            self._crashed(pod, f"tritonserver did not start: {err}")
            return
        pod.state, pod.ready, pod.waiting = STARTING, False, None
        log.info("pod %s: tritonserver starting on %s (restart %d)", pod.key, pod.ip, pod.restarts)

    def _crashed(self, pod: _Pod, why: str) -> None:
        server = pod.server
        assert server is not None
        code = server.stop(timeout=5)
        errors = server.error_lines(this_run=True)
        message = "\n".join([why, *errors])[-MESSAGE_LIMIT:]
        pod.restarts += 1
        pod.backoff = min(self.max_backoff, self.restart_backoff * 2 ** (pod.restarts - 1))
        pod.next_start = time.monotonic() + pod.backoff
        pod.state, pod.ready = BACKOFF, False
        pod.last_terminated = {"exitCode": _exit_code(code), "reason": "Error", "message": message,
                               "startedAt": pod.started_at, "finishedAt": rfc3339()}
        pod.waiting = {"reason": "CrashLoopBackOff",
                       "message": f"back-off {pod.backoff:.0f}s restarting failed container={pod.container} "
                                  f"pod={pod.name}_{pod.namespace}({pod.uid})"}
        log.warning("pod %s: %s (exit code %s; restart %d in %.0fs)%s", pod.key, why, code, pod.restarts,
                    pod.backoff, "".join(f"\n  {line}" for line in errors[:5]))

    # ------------------------------------------------------------------ the repository
    def _prepare(self, pod: _Pod) -> Path:
        """The pod's view of the model repository on this host, converted for the local server."""
        obj = pod.obj
        container = self._triton_container(obj)
        root = MODEL_ROOT
        args = list(container.get("args") or [])
        for i, arg in enumerate(args):
            if arg.startswith("--model-repository="):
                root = arg.split("=", 1)[1]
            elif arg == "--model-repository" and i + 1 < len(args):
                root = args[i + 1]
        root = root.rstrip("/") or "/"
        volumes = {v["name"]: v for v in obj["spec"].get("volumes") or []}
        view = pod.dir / "view"
        shutil.rmtree(view, ignore_errors=True)
        view.mkdir(parents=True)
        for mount in container.get("volumeMounts") or []:
            path = mount["mountPath"].rstrip("/")
            if path != root and not path.startswith(root + "/"):
                continue
            rel = path[len(root):].lstrip("/")
            volume = volumes[mount["name"]]
            target = view / rel if rel else view
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
            elif "configMap" in volume:
                self._place_config_map(pod, volume["configMap"], mount.get("subPath"), target)
            else:
                source = host_path(self.kube, pod.namespace, volume)
                if mount.get("subPath"):
                    source = source / mount["subPath"]
                if not source.exists():
                    raise ConfigError(f"volume {volume['name']}: {source} does not exist on this host")
                self._place_host_path(source, target)
        repository = pod.dir / "repository"
        shutil.rmtree(repository, ignore_errors=True)
        return local_repository(view, repository)

    def _place_config_map(self, pod: _Pod, ref: dict[str, Any], sub_path: str | None, target: Path) -> None:
        cm = self.kube.get("v1", "ConfigMap", pod.namespace, ref["name"])
        if cm is None:
            if ref.get("optional"):
                return
            raise ConfigError(f'configmap "{ref["name"]}" not found')
        data = cm.get("data") or {}
        files = {item["path"]: item["key"] for item in ref["items"]} if ref.get("items") else {k: k for k in data}
        if sub_path:
            key = files.get(sub_path)
            if key is None or key not in data:
                raise ConfigError(f'configmap "{ref["name"]}" has no key {sub_path}')
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key])
            return
        for path, key in files.items():
            if key not in data:
                raise ConfigError(f'configmap "{ref["name"]}" has no key {key}')
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_text(data[key])

    @staticmethod
    def _place_host_path(source: Path, target: Path) -> None:
        """Link the host directory (or file) into the view; the root itself gets one link per entry."""
        if target.exists() and target.is_dir() and source.is_dir():
            for entry in source.iterdir():
                (target / entry.name).symlink_to(entry.resolve())
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source.resolve())

    # ------------------------------------------------------------------ the status a kubelet writes
    def _container_statuses(self, pod: _Pod) -> list[dict[str, Any]]:
        current = {c["name"]: c for c in (pod.obj.get("status") or {}).get("containerStatuses") or []}
        statuses = []
        for container in pod.obj["spec"]["containers"]:
            name = container["name"]
            status: dict[str, Any] = {"name": name, "image": container["image"],
                                      "imageID": current.get(name, {}).get("imageID", "")}
            if name != pod.container:  # anything beside Triton: simulated, ready at once (KWOK fast)
                started = ((current.get(name, {}).get("state") or {}).get("running") or {}).get("startedAt")
                status.update(ready=True, started=True, restartCount=0,
                              state={"running": {"startedAt": started or rfc3339()}})
            else:
                running = pod.state in (STARTING, RUNNING)
                status.update(ready=pod.ready, started=pod.state == RUNNING, restartCount=pod.restarts,
                              state={"running": {"startedAt": pod.started_at}} if running
                              else {"waiting": dict(pod.waiting or {"reason": "ContainerCreating"})})
                if pod.last_terminated:
                    status["lastState"] = {"terminated": dict(pod.last_terminated)}
            statuses.append(status)
        return statuses

    def _conditions(self, pod: _Pod, ready: bool) -> list[dict[str, Any]]:
        current = {c["type"]: c for c in (pod.obj.get("status") or {}).get("conditions") or []}
        wanted = "True" if ready else "False"
        conditions = []
        for ctype in ("Ready", "ContainersReady"):
            old = current.get(ctype, {})
            cond = {"type": ctype, "status": wanted,
                    "lastTransitionTime": old["lastTransitionTime"]
                    if old.get("status") == wanted and old.get("lastTransitionTime") else rfc3339()}
            if not ready:
                cond.update(reason="ContainersNotReady",
                            message=f"containers with unready status: [{pod.container}]")
            conditions.append(cond)
        return conditions

    def _report(self, pod: _Pod) -> None:
        """Patch the pod's status when what a kubelet would report has changed."""
        fingerprint = (pod.state, pod.ready, pod.restarts, (pod.waiting or {}).get("message"), pod.started_at)
        if fingerprint == pod.reported:
            return
        self._patch_status(pod, pod.ready)
        pod.reported = fingerprint

    def _patch_status(self, pod: _Pod, ready: bool) -> None:
        body = {"metadata": {"resourceVersion": pod.obj["metadata"]["resourceVersion"]},
                "status": {"conditions": self._conditions(pod, ready),
                           "containerStatuses": self._container_statuses(pod)}}
        try:
            self.kube.call("PATCH", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status", body=body,
                           content_type="application/strategic-merge-patch+json")
        except ApiException as err:
            if err.status != 404:  # 409: changed since it was listed; the next pass writes it again
                raise

    # ------------------------------------------------------------------ lifecycle
    def _stop_servers(self, pods: list[_Pod], reason: str) -> None:
        running = [p for p in pods if p.server is not None]
        for pod in running:
            log.info("pod %s %s: stopping its tritonserver", pod.key, reason)
            pod.server.terminate()
        for pod in running:
            pod.server.stop()
            pod.server = None
        for pod in pods:
            for part in ("view", "repository"):
                shutil.rmtree(pod.dir / part, ignore_errors=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as err:  # noqa: BLE001 - a failed pass is retried; tests see the effect
                log.warning("probed pod sync failed: %s", err)
            self._stop.wait(self.interval)

    def start(self) -> ProbedPods:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="probed-pods", daemon=True)
        self._thread.start()
        return self

    def stop(self, mark_unready: bool = True) -> None:
        """Stop the loop and every server; pods still there are marked unready (best effort)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)
            self._thread = None
        with self._lock:
            pods = list(self._pods.values())
            self._stop_servers(pods + [pod for _, pod in self._draining], reason="agent stopping")
            self._draining = []
            if mark_unready:
                for pod in pods:
                    if pod.ready:
                        pod.ready = False
                        try:
                            self._patch_status(pod, False)
                        except Exception as err:  # noqa: BLE001 - best effort: the pod may be gone
                            log.info("pod %s: not marked unready (%s)", pod.key, err)
            self._pods.clear()
        self._publish([])

    def __enter__(self) -> ProbedPods:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ for tests and load
    def _endpoints(self, port: str, namespace: str | None, selector: str | None, ready_only: bool) -> list[str]:
        with self._lock:
            return sorted(f"{p.ip}:{p.ports[port]}" for p in self._pods.values()
                          if (namespace is None or p.namespace == namespace) and _matches(p.labels, selector)
                          and p.server is not None and p.server.running and (p.ready or not ready_only))

    def http_endpoints(self, namespace: str | None = None, selector: str | None = None,
                       ready_only: bool = True) -> list[str]:
        """``PODIP:8000`` of each (Ready) pod, for tritonclient.http or ``http://`` URLs."""
        return self._endpoints("http", namespace, selector, ready_only)

    def grpc_endpoints(self, namespace: str | None = None, selector: str | None = None,
                       ready_only: bool = True) -> list[str]:
        """``PODIP:8001`` of each (Ready) pod, as tritonclient.grpc and ``peakserve bench`` take them."""
        return self._endpoints("grpc", namespace, selector, ready_only)

    def states(self, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """``{"ns/pod": {"ip", "state", "ready", "restarts", "message"}}``: what the agent sees."""
        with self._lock:
            return {p.key: {"ip": p.ip, "state": p.state, "ready": p.ready, "restarts": p.restarts,
                            "message": (p.waiting or {}).get("message") or ""}
                    for p in self._pods.values() if namespace is None or p.namespace == namespace}

    def server(self, namespace: str, name: str) -> LocalTriton | None:
        with self._lock:
            for pod in self._pods.values():
                if pod.namespace == namespace and pod.name == name:
                    return pod.server
        return None
