"""prometheus-adapter (built from sigs.k8s.io/prometheus-adapter, see build.py) as a local process.

It serves custom.metrics.k8s.io from Prometheus with the chart's rules
(``charts/peakserve/files/adapter-rules.yaml``) on 127.0.0.1, with a serving certificate signed
by the dev cluster's CA. It delegates authentication and authorization to the dev cluster's
kube-apiserver and trusts the identity headers of that apiserver's front proxy (read from
kube-system's extension-apiserver-authentication ConfigMap). Registering it with the
aggregation layer is :mod:`peakserve.devcluster.metrics_stack`'s job.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import build
from .certs import make_serving_cert
from .cluster import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
RULES_FILE = REPO_ROOT / "charts" / "peakserve" / "files" / "adapter-rules.yaml"


class AdapterError(RuntimeError):
    pass


class AdapterProcess:
    """The adapter on ``https://127.0.0.1:port``.

    ``dns_names`` go into its serving certificate: the kube-aggregator checks the name
    ``<service>.<namespace>.svc`` of the Service the APIService points at.
    """

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
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    def argv(self, binary: Path, cert: Path, key: Path) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        return [str(binary),
                f"--prometheus-url={self.prometheus_url}",
                f"--config={self.rules_file}",
                f"--metrics-relist-interval={self.relist_interval}",
                "--bind-address=127.0.0.1", f"--secure-port={self.port}",
                f"--tls-cert-file={cert}", f"--tls-private-key-file={key}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--v={self.verbosity}"]

    def start(self, timeout: float = 30, log=print) -> AdapterProcess:
        if self.running:
            raise RuntimeError("already running")
        if not self.rules_file.exists():
            raise AdapterError(f"adapter rules missing: {self.rules_file}")
        binary = build.ensure_binaries(log, groups=("prometheus-adapter",))["prometheus-adapter"]
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = make_serving_cert(self.workdir / "pki", "prometheus-adapter", self.dns_names, self.ca_dir)
        for attempt in range(3):  # a port taken between free_port() and bind: try another
            if self.port is None:
                self.port = free_port()
            logf = open(self.log_path, "ab")
            try:
                self._proc = subprocess.Popen(self.argv(binary, cert, key), stdin=subprocess.DEVNULL,
                                              stdout=logf, stderr=subprocess.STDOUT, cwd=self.workdir,
                                              start_new_session=True)
            finally:
                logf.close()
            try:
                self._wait_serving(timeout)
                return self
            except AdapterError:
                in_use = "address already in use" in self.log_tail()
                self.stop()
                if not in_use or attempt == 2:
                    raise
                self.port = None
        return self

    def _wait_serving(self, timeout: float) -> None:
        """Until its TLS port answers /healthz (any HTTP status means it serves)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=ctx))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise AdapterError(f"prometheus-adapter exited with {self._proc.returncode}; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                with opener.open(f"{self.url}/healthz", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AdapterError(f"prometheus-adapter not serving after {timeout}s; log {self.log_path}:\n"
                           f"{self.log_tail()}")

    def stop(self, timeout: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except FileNotFoundError:
            return ""
