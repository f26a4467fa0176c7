"""prometheus-adapter (built from sigs.k8s.io/prometheus-adapter, see controlplane/binaries.py) as a local process.

It serves custom.metrics.k8s.io from Prometheus with the chart's rules
(``charts/peakserve/files/adapter-rules.yaml``) on 127.0.0.1, with a serving certificate signed
by the dev cluster's CA. It delegates authentication and authorization to the dev cluster's
kube-apiserver and trusts the identity headers of that apiserver's front proxy (read from
kube-system's extension-apiserver-authentication ConfigMap). Registering it with the
aggregation layer is :mod:`peakserve_harness.metrics.stack`'s job.
"""

from __future__ import annotations

from pathlib import Path

from ..controlplane import binaries
from ..controlplane.certs import make_serving_cert
from .loopback_process import LoopbackProcess

REPO_ROOT = Path(__file__).resolve().parents[3]
RULES_FILE = REPO_ROOT / "charts" / "peakserve" / "files" / "adapter-rules.yaml"


class AdapterError(RuntimeError):
    pass


class AdapterProcess(LoopbackProcess):
    """The adapter on ``https://127.0.0.1:port``.

    ``dns_names`` go into its serving certificate: the kube-aggregator checks the name
    ``<service>.<namespace>.svc`` of the Service the APIService points at.
    """

    name = "prometheus-adapter"
    error = AdapterError

    def __init__(self, workdir: Path, kubeconfig: Path, ca_dir: Path, prometheus_url: str,
                 rules_file: Path = RULES_FILE, dns_names: tuple[str, ...] = ("localhost",),
                 relist_interval: str = "2s", port: int | None = None, verbosity: int = 1):
        self.workdir = Path(workdir)
        self.kubeconfig = Path(kubeconfig)
        self.ca_dir = Path(ca_dir)
        self.prometheus_url = prometheus_url
        self.rules_file = Path(rules_file)
        self.dns_names = dns_names
        self.relist_interval = relist_interval
        self.port = port
        self.verbosity = verbosity
        self.log_path = self.workdir / "prometheus-adapter.log"
        self._proc = None
        self._binary = self._cert = self._key = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    def argv(self) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        return [str(self._binary),
                f"--prometheus-url={self.prometheus_url}",
                f"--config={self.rules_file}",
                f"--metrics-relist-interval={self.relist_interval}",
                "--bind-address=127.0.0.1", f"--secure-port={self.port}",
                f"--tls-cert-file={self._cert}", f"--tls-private-key-file={self._key}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--v={self.verbosity}"]

    def start(self, timeout: float = 30, log=print) -> AdapterProcess:
        if self.running:
            raise RuntimeError("already running")
        if not self.rules_file.exists():
            raise AdapterError(f"adapter rules missing: {self.rules_file}")
        self._binary = binaries.ensure_binaries(log, groups=("prometheus-adapter",))["prometheus-adapter"]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cert, self._key = make_serving_cert(self.workdir / "pki", "prometheus-adapter", self.dns_names,
                                                  self.ca_dir)
        self.launch(timeout)
        return self

    def probe(self) -> bool:
        return self.serves_https(self.url, self.ca_file)

    def stop(self, timeout: float = 10) -> None:
        self.stop_process(timeout)
