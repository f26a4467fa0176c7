"""KEDA live on the dev control plane: its CRDs, its operator and its metrics API server as local processes.

    ScaledObject --KEDA operator (scalers: Prometheus, cron ...)--> HPA keda-hpa-<name> on external metrics
    kube-controller-manager's HPA controller --external.metrics.k8s.io, aggregation layer--> KEDA metrics
    API server (keda-adapter) --gRPC, mTLS--> the operator's metrics service --> the scalers

``Keda(cluster, workdir).start()`` installs the CRDs of ``github.com/kedacore/keda/v2`` (the module's
config/crd/bases, cached beside the binaries by :mod:`.keda_binaries`), creates the ``keda`` namespace,
and starts, both on 127.0.0.1 with the cluster's kubeconfig:

- the **operator** (``cmd/operator``): ``WATCH_NAMESPACE=""`` (all namespaces), ``POD_NAMESPACE`` and
  ``KEDA_CLUSTER_OBJECT_NAMESPACE`` ``keda``; its controller metrics, health probes and gRPC metrics service
  on free loopback ports; ``--enable-cert-rotation=false``: KEDA's own cert manager would write a Secret
  and patch the APIService, so both sides get one certificate from the dev CA instead
  (``<workdir>/certs/{ca.crt,tls.crt,tls.key}``, serverAuth and clientAuth: the gRPC metrics service
  is mutual TLS, and the adapter presents its serving certificate as its client certificate);
- the **metrics API server** (``cmd/adapter``): serves external.metrics.k8s.io on https://127.0.0.1:PORT,
  dials the operator's metrics service at ``--metrics-service-address=127.0.0.1:PORT`` with the same
  certificate directory (``--cert-dir``), delegates authentication/authorization to the kube-apiserver
  and trusts its front proxy, exactly like prometheus-adapter in :mod:`..metrics.stack`.

It is registered like prometheus-adapter: a Service ``keda-metrics-apiserver`` of ``type: ExternalName``
(``localhost``) in ``keda`` and the APIService ``v1beta1.external.metrics.k8s.io`` pointing at it, the dev
CA as caBundle. ``stop()`` unregisters first (an APIService whose server is gone breaks discovery), then
stops both processes; ``stop(remove_crds=True)`` first deletes every ScaledObject while the operator can
still take its finalizer off, then the CRDs, so that later tests see a cluster without keda.sh again.

One loopback exception, from KEDA's source: the metrics API server's own Prometheus endpoint (``--port``)
binds ``:PORT`` on every interface (``fmt.Sprintf(":%v", ...)`` in cmd/adapter/main.go, no address flag);
it gets a free port and serves nothing but KEDA's metrics.

``python -m peakserve_harness.controlplane.keda [--dir DIR]`` runs it against the running
``peakserve-dev up`` cluster until SIGINT/SIGTERM.
"""

from __future__ import annotations

import base64
import shutil
import signal
import sys
import time
import urllib.error
from pathlib import Path
from typing import Callable

import yaml

from . import versions
from .certs import _signed
from .cluster import DevCluster
from .keda_binaries import ADAPTER, OPERATOR, crd_dir, ensure_keda
from ..loopback import DIRECT, free_port
from ..metrics import aggregation
from ..metrics.loopback_process import LoopbackProcess

NAMESPACE = "keda"
SERVICE = "keda-metrics-apiserver"
GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
FIELD_MANAGER = "peakserve-dev"
CRD_GROUP = "keda.sh"
CRD_COLLECTION = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


class KedaError(RuntimeError):
    pass


def make_keda_certs(workdir: Path, ca_dir: Path, dns_names: tuple[str, ...]) -> Path:
    """``workdir/certs/{ca.crt,tls.crt,tls.key}`` as KEDA reads them (pkg/metricsservice/utils): one
    certificate for 127.0.0.1 and ``dns_names``, signed by the dev CA, for serving and as a client."""
    pki = workdir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    for suffix in ("crt", "key"):
        link = pki / f"ca.{suffix}"
        if not link.exists():
            link.symlink_to((ca_dir / f"ca.{suffix}").resolve())
    sans = ",".join(["IP:127.0.0.1", *(f"DNS:{d}" for d in dns_names)])
    _signed(pki, "keda", "keda", "ca",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={sans}\n")
    certs = workdir / "certs"  # the only files there: KEDA watches the directory for rotation
    certs.mkdir(parents=True, exist_ok=True)
    for src, dst in (("ca.crt", "ca.crt"), ("keda.crt", "tls.crt"), ("keda.key", "tls.key")):
        shutil.copyfile(pki / src, certs / dst)
    return certs


def _env(kubeconfig: Path) -> dict[str, str]:
    return {"KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": "", "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE}


class _KedaProcess(LoopbackProcess):
    error = KedaError

    def __init__(self, workdir: Path, kubeconfig: Path, cert_dir: Path, binary: Path):
        self.workdir = Path(workdir)
        self.kubeconfig = Path(kubeconfig)
        self.cert_dir = Path(cert_dir)
        self.binary = Path(binary)
        self.port: int | None = None
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc = None

    def launch(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        super().launch(timeout)

    def command(self, *args: str) -> list[str]:
        """The binary under env(1), which sets KEDA's namespaces and execs it (same PID, same group)."""
        return ["env", *(f"{k}={v}" for k, v in _env(self.kubeconfig).items()), str(self.binary), *args]

    def stop(self, timeout: float = 10) -> None:
        self.stop_process(timeout)


class KedaOperatorProcess(_KedaProcess):
    """The operator; ``port`` is its health probe port, ``grpc_port`` its metrics service (mTLS)."""

    name = "keda-operator"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grpc_port: int | None = None
        self.metrics_port: int | None = None

    @property
    def metrics_service(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def argv(self) -> list[str]:
        # Fresh ports on each attempt, like `port` (LoopbackProcess retries when an address was taken).
        self.grpc_port, self.metrics_port = free_port(), free_port()
        ca_dir = self.workdir / "scaler-ca"  # CAs for scalers' TLS (--ca-dir); none needed here
        ca_dir.mkdir(parents=True, exist_ok=True)
        return self.command(
                f"--kubeconfig={self.kubeconfig}",
                f"--health-probe-bind-address=127.0.0.1:{self.port}",
                f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
                f"--metrics-service-bind-address=127.0.0.1:{self.grpc_port}",
                "--leader-elect=false",
                "--enable-cert-rotation=false", f"--cert-dir={self.cert_dir}",
                "--enable-webhook-patching=false", "--enable-apiservice-patching=false",
                f"--ca-dir={ca_dir}",
                "--zap-log-level=info", "--zap-encoder=console", "--zap-time-encoding=rfc3339")

    def probe(self) -> bool:
        """Ready (/readyz) and its gRPC metrics service accepts connections."""
        import socket

        try:
            with DIRECT.open(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as resp:
                if resp.status != 200:
                    return False
        except urllib.error.URLError:
            return False
        with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=2):
            return True


class KedaMetricsServerProcess(_KedaProcess):
    """The metrics API server (external.metrics.k8s.io) on ``https://127.0.0.1:port``."""

    name = "keda-adapter"

    def __init__(self, *args, metrics_service: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.metrics_service = metrics_service
        self.prometheus_port: int | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        self.prometheus_port = free_port()
        return self.command(
                f"--kubeconfig={kubeconfig}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={self.port}",
                f"--cert-dir={self.cert_dir}",
                f"--tls-cert-file={self.cert_dir / 'tls.crt'}",
                f"--tls-private-key-file={self.cert_dir / 'tls.key'}",
                f"--metrics-service-address={self.metrics_service}",
                f"--port={self.prometheus_port}",
                "--zap-log-level=info", "--zap-encoder=console")

    def probe(self) -> bool:
        return self.serves_https(self.url, self.cert_dir / "ca.crt")


class Keda:
    def __init__(self, cluster: DevCluster, workdir: Path, *, log: Callable[[str], None] = print):
        self.cluster = cluster
        self.workdir = Path(workdir)
        self.log = log
        self.operator: KedaOperatorProcess | None = None
        self.adapter: KedaMetricsServerProcess | None = None
        self.timings: dict[str, float] = {}
        self._kube = None

    @property
    def kube(self):
        if self._kube is None:
            from peakserve.cluster.client import Kube

            self._kube = Kube.from_kubeconfig(self.cluster.kubeconfig)
        return self._kube

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 90) -> Keda:
        t0 = time.monotonic()
        binaries = ensure_keda(self.log, include_webhooks=False)
        self.timings["binaries_s"] = time.monotonic() - t0
        self.check_aggregation_layer()
        certs = make_keda_certs(self.workdir, self.cluster.dir / "pki",
                                ("localhost", f"{SERVICE}.{NAMESPACE}.svc", f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
                                 f"keda-operator.{NAMESPACE}.svc", f"keda-operator.{NAMESPACE}.svc.cluster.local"))
        try:
            t1 = time.monotonic()
            self.install_crds(timeout)
            self.kube.apply({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": NAMESPACE, "labels": self._labels()}}, manager=FIELD_MANAGER)
            self.timings["crds_s"] = time.monotonic() - t1
            t2 = time.monotonic()
            self.operator = KedaOperatorProcess(self.workdir / "operator", self.cluster.kubeconfig, certs,
                                                binaries[OPERATOR])
            self.operator.launch(timeout)
            self.timings["operator_s"] = time.monotonic() - t2
            t3 = time.monotonic()
            self.adapter = KedaMetricsServerProcess(self.workdir / "adapter", self.cluster.kubeconfig, certs,
                                                    binaries[ADAPTER], metrics_service=self.operator.metrics_service)
            self.adapter.launch(timeout)
            self.timings["adapter_s"] = time.monotonic() - t3
            t4 = time.monotonic()
            self.register()
            self.wait_available(timeout)
            self.timings["apiservice_s"] = time.monotonic() - t4
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - t0
        self.log(f"[keda] KEDA {versions.KEDA}: operator (metrics service {self.operator.metrics_service}), "
                 f"metrics API server {self.adapter.url}; {GROUP} available in {self.timings['start_s']:.1f}s")
        return self

    def stop(self, remove_crds: bool = False, timeout: float = 60) -> None:
        try:
            if self.cluster.running():
                if remove_crds:
                    self.delete_scaled_objects(timeout)
                self.unregister()
        finally:
            for proc in (self.adapter, self.operator):
                if proc is not None:
                    proc.stop()
        if remove_crds and self.cluster.running():
            self.uninstall_crds(timeout)

    def __enter__(self) -> Keda:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def _labels() -> dict[str, str]:
        return {"app.kubernetes.io/part-of": "keda-operator", "app.kubernetes.io/managed-by": FIELD_MANAGER}

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name} log {p.log_path}:\n{p.log_tail()}"
                         for p in (self.operator, self.adapter) if p is not None)

    # ------------------------------------------------------------------ CRDs
    @staticmethod
    def crds() -> list[dict]:
        found = []
        for path in sorted(crd_dir().glob("*.yaml")):
            found += [doc for doc in yaml.safe_load_all(path.read_text())
                      if doc and doc.get("kind") == "CustomResourceDefinition"]
        if not found:
            raise KedaError(f"no KEDA CRDs in {crd_dir()}: run `python -m peakserve_harness.controlplane.keda_binaries`")
        return found

    def install_crds(self, timeout: float = 60) -> list[str]:
        names = []
        for crd in self.crds():
            self.kube.call("PATCH", f"{CRD_COLLECTION}/{crd['metadata']['name']}", body=crd,
                           query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                           content_type="application/apply-patch+yaml")
            names.append(crd["metadata"]["name"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._established(n) for n in names) and self._serves_scaled_objects():
                return names
            time.sleep(0.3)
        raise KedaError(f"KEDA CRDs not established within {timeout:.0f}s: {names}")

    def _established(self, name: str) -> bool:
        crd = self.kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name)
        return any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in ((crd or {}).get("status") or {}).get("conditions") or [])

    def _serves_scaled_objects(self) -> bool:
        try:
            resources = self.kube.call("GET", f"/apis/{CRD_GROUP}/v1alpha1").get("resources", [])
        except Exception:  # noqa: BLE001 - 404/503 while discovery catches up
            return False
        return any(r.get("name") == "scaledobjects" for r in resources)

    def delete_scaled_objects(self, timeout: float = 60) -> None:
        """Delete every ScaledObject while the operator still runs (it removes its finalizer); strip what
        is left after ``timeout`` so that nothing blocks the deletion of namespaces or of the CRDs."""
        if not self._serves_scaled_objects():
            return
        items = self.kube.list("keda.sh/v1alpha1", "ScaledObject", None)
        for so in items:
            self.kube.delete("keda.sh/v1alpha1", "ScaledObject", so["metadata"]["namespace"], so["metadata"]["name"])
        deadline = time.monotonic() + timeout
        while items and time.monotonic() < deadline:
            items = self.kube.list("keda.sh/v1alpha1", "ScaledObject", None)
            time.sleep(0.5)
        for so in items:
            meta = so["metadata"]
            try:
                self.kube.merge_patch("keda.sh/v1alpha1", "ScaledObject", meta["namespace"], meta["name"],
                                      {"metadata": {"finalizers": None}})
            except Exception as err:  # noqa: BLE001 - gone in the meantime
                if getattr(err, "status", None) != 404:
                    raise

    def uninstall_crds(self, timeout: float = 60) -> None:
        for crd in self.crds():
            try:
                self.kube.call("DELETE", f"{CRD_COLLECTION}/{crd['metadata']['name']}")
            except Exception as err:  # noqa: BLE001 - only "already gone" is expected here
                if getattr(err, "status", None) != 404:
                    raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.kube.serves(f"{CRD_GROUP}/v1alpha1"):
                return
            time.sleep(0.3)
        raise KedaError(f"{CRD_GROUP}/v1alpha1 still served {timeout:.0f}s after its CRDs were deleted")

    # ------------------------------------------------------------------ registration
    def check_aggregation_layer(self) -> None:
        aggregation.check_aggregation_layer(self.kube, KedaError)

    def manifests(self) -> list[dict]:
        ca = base64.b64encode((self.cluster.dir / "pki" / "ca.crt").read_bytes()).decode()
        port = self.adapter.port
        labels = self._labels()
        return [
            # ExternalName: the kube-aggregator proxies to https://localhost:<APIService port>.
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": labels},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "https", "port": port, "targetPort": port}]}},
            # As KEDA's config/metrics-server/api_service.yaml, with the dev CA instead of KEDA's own.
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": f"{VERSION}.{GROUP}", "labels": labels},
             "spec": {"group": GROUP, "version": VERSION,
                      "service": {"name": SERVICE, "namespace": NAMESPACE, "port": port},
                      "caBundle": ca, "groupPriorityMinimum": 100, "versionPriority": 100}},
        ]

    def register(self) -> None:
        for obj in self.manifests():
            self.kube.apply(obj, manager=FIELD_MANAGER)

    def unregister(self) -> None:
        if self.adapter is None or self.adapter.port is None:
            return
        for obj in reversed(self.manifests()):
            self.kube.delete(obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def wait_available(self, timeout: float = 60) -> None:
        """Until the APIService is Available and the API server proxies discovery to the metrics server."""
        aggregation.wait_available(self.kube, GROUP, [VERSION], [self.operator, self.adapter], KedaError, timeout,
                                   logs=lambda: f"\n{self.log_tails()}")

    # ------------------------------------------------------------------ reading
    def external_metric(self, namespace: str, metric: str, scaled_object: str) -> list[dict]:
        """What the HPA controller reads: external.metrics.k8s.io items of one ScaledObject's metric."""
        selector = f"scaledobject.keda.sh/name={scaled_object}"
        return self.kube.call("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{metric}",
                              query=[("labelSelector", selector)]).get("items", [])


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .cluster import default_dir

    parser = argparse.ArgumentParser(prog="python -m peakserve_harness.controlplane.keda", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="the dev cluster's state directory")
    parser.add_argument("--remove-crds", action="store_true", help="delete KEDA's CRDs when stopping")
    args = parser.parse_args(argv)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    cluster = DevCluster(args.dir or default_dir(), log=say)
    if not cluster.running():
        say("the dev control plane is not running: `peakserve-dev up` first")
        return 1
    keda = Keda(cluster, cluster.dir / "keda", log=say)
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    keda.start()
    try:
        print(yaml.safe_dump({"metricsServer": keda.adapter.url, "metricsService": keda.operator.metrics_service,
                              **{k: round(v, 1) for k, v in keda.timings.items()}}), flush=True)
        signal.sigwait(signals)
    finally:
        keda.stop(remove_crds=args.remove_crds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
