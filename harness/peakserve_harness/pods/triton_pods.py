"""A real tritonserver behind every Triton pod that KWOK runs, for closed-loop autoscaling tests.

KWOK marks pods Running without running anything. This harness watches the ModelDeployment's pods
and starts one local tritonserver per Running pod (on loopback, serving the same repository), stops
it when the pod goes away, and reports the servers as Prometheus targets labelled with the pod's
namespace and name: exactly the labels a PodMonitor gives Triton's metrics port in a real cluster.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

from peakserve.cluster.client import Kube
from peakserve.render import names
from ..triton.server import LocalTriton

log = logging.getLogger("peakserve.pod-servers")

Target = tuple[str, dict[str, str]]   # ("127.0.0.1:port", {"namespace": ..., "pod": ...})


class PodServers:
    def __init__(self, kube: Kube, namespace: str, md_name: str, repository: Path, workdir: Path,
                 on_targets: Callable[[list[Target]], None], env: dict[str, str] | None = None):
        self.kube, self.namespace, self.repository, self.workdir = kube, namespace, repository, workdir
        self.selector = names.pod_selector(md_name)
        # Extra variables on top of this process's environment (LocalTriton takes a whole environment).
        self.on_targets, self.env = on_targets, {**os.environ, **(env or {})}
        self.servers: dict[str, LocalTriton] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _live_pods(self) -> list[str]:
        return [p["metadata"]["name"] for p in self.kube.list("v1", "Pod", self.namespace, self.selector)
                if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]

    def sync(self) -> None:
        """Start servers for new pods, stop servers of pods that are gone, publish the targets."""
        live = set(self._live_pods())
        with self._lock:
            for pod in sorted(set(self.servers) - live):
                log.info("pod %s gone: stopping its tritonserver", pod)
                self.servers.pop(pod).stop()
            for pod in sorted(live - set(self.servers)):
                server = LocalTriton(self.repository, workdir=self.workdir / pod, env=self.env).start()
                server.wait_ready(timeout=60)
                log.info("pod %s: tritonserver ready at %s", pod, server.grpc_url)
                self.servers[pod] = server
            targets = [(s.metrics_url.split("/")[2], {"namespace": self.namespace, "pod": pod})
                       for pod, s in sorted(self.servers.items())]
        self.on_targets(targets)

    def grpc_endpoints(self) -> list[str]:
        with self._lock:
            return [s.grpc_url for s in self.servers.values() if s.running]

    def count(self) -> int:
        with self._lock:
            return len(self.servers)

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as err:  # noqa: BLE001 - a failed pass is retried; the test sees the effect
                log.warning("pod server sync failed: %s", err)
            self._stop.wait(interval)

    def start(self, interval: float = 0.5) -> "PodServers":
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="pod-servers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        with self._lock:
            for server in self.servers.values():
                server.terminate()
            for server in self.servers.values():
                server.stop()
            self.servers.clear()

    def __enter__(self) -> "PodServers":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
