"""The metrics pipeline of the local control plane, real end to end:

    Triton /metrics --scrape 1 s--> Prometheus (Debian) --> prometheus-adapter (built from its Go
    module, the chart's rules) --> custom.metrics.k8s.io through the kube-apiserver's aggregation
    layer --> the kube-controller-manager's HPA controller.

``MetricsStack(cluster, workdir).start()`` starts Prometheus and the adapter on 127.0.0.1 and
registers the adapter with the dev cluster: a Service of ``type: ExternalName`` (``localhost``)
in ``custom-metrics`` and the APIServices ``v1beta1``/``v1beta2.custom.metrics.k8s.io`` pointing
at it with the dev CA as caBundle. The kube-aggregator resolves an ExternalName Service to
``https://<externalName>:<APIService port>`` (without --enable-aggregator-routing), so no
Endpoints with a loopback address are needed (the API server rejects those).
``set_targets([("127.0.0.1:PORT", {"namespace": ..., "pod": ...})])`` says which Triton metrics
ports to scrape, labelled as the pods they stand for. ``stop()`` unregisters first (an APIService
whose server is gone breaks discovery, and with it namespace deletion), then stops both processes.

``python -m peakserve_harness.metrics.stack [--dir DIR]`` runs it against the running
``peakserve-dev up`` cluster until SIGINT/SIGTERM.
"""

from __future__ import annotations

import base64
import json
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import aggregation
from .adapter import RULES_FILE, AdapterProcess
from ..controlplane.cluster import DevCluster
from .prometheus import PrometheusProcess

NAMESPACE = "custom-metrics"
SERVICE = "prometheus-adapter"
GROUP = "custom.metrics.k8s.io"
# The adapter (custom-metrics-apiserver v1.30) serves both; the HPA controller prefers v1beta2.
VERSIONS = {"v1beta1": 100, "v1beta2": 200}
FIELD_MANAGER = "peakserve-dev"


def parse_quantity(value: str) -> float:
    """A Kubernetes quantity as the custom metrics API returns it ("1500m", "12", "3k") to a float."""
    from kubernetes.utils.quantity import parse_quantity as parse

    return float(parse(value))


class MetricsStackError(RuntimeError):
    pass


class MetricsStack:
    def __init__(self, cluster: DevCluster, workdir: Path, *, rules_file: Path = RULES_FILE,
                 relist_interval: str = "2s", namespace: str = NAMESPACE,
                 log: Callable[[str], None] = print):
        self.cluster = cluster
        self.workdir = Path(workdir)
        self.namespace = namespace
        self.log = log
        self.prometheus = PrometheusProcess(self.workdir / "prometheus")
        self.adapter = AdapterProcess(
            self.workdir / "adapter", cluster.kubeconfig, cluster.dir / "pki", "",
            rules_file=rules_file, relist_interval=relist_interval,
            dns_names=("localhost", f"{SERVICE}.{namespace}.svc", f"{SERVICE}.{namespace}.svc.cluster.local"))
        self.timings: dict[str, float] = {}
        self._kube = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60) -> MetricsStack:
        t0 = time.monotonic()
        self.check_aggregation_layer()
        try:
            self.prometheus.start(timeout=timeout)
            self.timings["prometheus_s"] = time.monotonic() - t0
            t1 = time.monotonic()
            self.adapter.prometheus_url = self.prometheus.url
            self.adapter.start(timeout=timeout, log=self.log)
            self.timings["adapter_s"] = time.monotonic() - t1
            t2 = time.monotonic()
            self.register()
            self.wait_available(timeout)
            self.timings["apiservice_s"] = time.monotonic() - t2
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - t0
        self.log(f"[metrics] Prometheus {self.prometheus.url}, prometheus-adapter {self.adapter.url}, "
                 f"{GROUP} available in {self.timings['start_s']:.1f}s")
        return self

    def stop(self) -> None:
        try:
            if self.cluster.running():
                self.unregister()
        finally:
            self.adapter.stop()
            self.prometheus.stop()

    def __enter__(self) -> MetricsStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_targets(self, targets: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        """Triton metrics ports to scrape, each ``(host:port, {"namespace": ..., "pod": ...})``."""
        targets = list(targets)
        for host_port, labels in targets:
            missing = {"namespace", "pod"} - set(labels)
            if missing:
                raise ValueError(f"target {host_port} lacks the label(s) {sorted(missing)} the adapter maps")
        self.prometheus.set_targets(targets)

    # ------------------------------------------------------------------ registration
    @property
    def kube(self):
        if self._kube is None:
            from peakserve.cluster.client import Kube

            self._kube = Kube.from_kubeconfig(self.cluster.kubeconfig)
        return self._kube

    def check_aggregation_layer(self) -> None:
        aggregation.check_aggregation_layer(self.kube, MetricsStackError)

    def manifests(self) -> list[dict]:
        ca = base64.b64encode((self.cluster.dir / "pki" / "ca.crt").read_bytes()).decode()
        port = self.adapter.port
        labels = {"app.kubernetes.io/name": SERVICE, "app.kubernetes.io/managed-by": FIELD_MANAGER}
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace, "labels": labels}},
            # ExternalName: the kube-aggregator proxies to https://localhost:<APIService port>.
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": SERVICE, "namespace": self.namespace, "labels": labels},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "https", "port": port, "targetPort": port}]}},
            *({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
               "metadata": {"name": f"{version}.{GROUP}", "labels": labels},
               "spec": {"group": GROUP, "version": version,
                        "service": {"name": SERVICE, "namespace": self.namespace, "port": port},
                        "caBundle": ca, "groupPriorityMinimum": 100, "versionPriority": priority}}
              for version, priority in VERSIONS.items()),
        ]

    def register(self) -> None:
        for obj in self.manifests():
            self.kube.apply(obj, manager=FIELD_MANAGER)

    def unregister(self) -> None:
        """Delete the APIServices and the Service (the namespace stays: deleting it is slow and
        a next start reuses it)."""
        for obj in reversed(self.manifests()[1:]):
            self.kube.delete(obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def apiservice_conditions(self) -> dict[str, dict]:
        return aggregation.available_conditions(self.kube, GROUP, VERSIONS)

    def wait_available(self, timeout: float = 60) -> None:
        """Until every APIService is Available and the API server proxies discovery to the adapter."""
        aggregation.wait_available(self.kube, GROUP, VERSIONS, [self.adapter], MetricsStackError, timeout,
                                   logs=lambda: f"; adapter log:\n{self.adapter.log_tail()}")

    # ------------------------------------------------------------------ reading metrics
    def metric_items(self, namespace: str, metric: str, pods: str = "*", selector: str = "",
                     version: str = "v1beta2") -> list[dict]:
        """The custom metrics API's items for pods in ``namespace``, through the API server."""
        query = [("labelSelector", selector)] if selector else []
        result = self.kube.call("GET", f"/apis/{GROUP}/{version}/namespaces/{namespace}/pods/{pods}/{metric}",
                                query=query)
        return result.get("items", [])

    def pod_metrics(self, namespace: str, metric: str, selector: str = "") -> dict[str, float]:
        """``{pod: value}`` of a per-pod custom metric, values as floats (quantities parsed)."""
        return {item["describedObject"]["name"]: parse_quantity(item["value"])
                for item in self.metric_items(namespace, metric, selector=selector)}

    def served_metrics(self) -> set[str]:
        """The metric names the adapter lists right now (``pods/<name>`` resources)."""
        resources = self.kube.call("GET", f"/apis/{GROUP}/v1beta1").get("resources", [])
        return {r["name"].split("/", 1)[1] for r in resources if r["name"].startswith("pods/")}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ..controlplane.cluster import default_dir

    parser = argparse.ArgumentParser(prog="python -m peakserve_harness.metrics.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="the dev cluster's state directory")
    parser.add_argument("--targets", type=Path, default=None,
                        help='JSON list of ["host:port", {"namespace": ..., "pod": ...}] to scrape')
    args = parser.parse_args(argv)
    cluster = DevCluster(args.dir or default_dir(), log=lambda m: print(m, file=sys.stderr, flush=True))
    if not cluster.running():
        print("the dev control plane is not running: `peakserve-dev up` first", file=sys.stderr)
        return 1
    stack = MetricsStack(cluster, cluster.dir / "metrics", log=cluster.log)
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    with stack:
        if args.targets:
            stack.set_targets((t[0], t[1]) for t in json.loads(args.targets.read_text()))
        print(json.dumps({"prometheus": stack.prometheus.url, "adapter": stack.adapter.url,
                          "targets_file": str(stack.prometheus.targets_file), **stack.timings}), flush=True)
        signal.sigwait(signals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
