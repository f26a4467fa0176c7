"""Prometheus (Debian's package, 2.42) as a local process that scrapes Triton metrics ports.

``python -m peakserve_harness.metrics.prometheus install`` installs it with apt-get when
``/usr/bin/prometheus`` is missing (`make tools` runs it; apt needs root). ``PrometheusProcess``
runs it on 127.0.0.1 with a generated config: a 1 s scrape interval and one ``file_sd_configs``
job whose targets :meth:`PrometheusProcess.set_targets` rewrites at run time, each target with
its own labels (``namespace`` and ``pod``, as the in-cluster PodMonitor relabels them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Iterable, Mapping

from ..loopback import DIRECT
from ..debian_packages import apt_install
from .loopback_process import LoopbackProcess

PROMETHEUS = Path("/usr/bin/prometheus")
APT_PACKAGE = "prometheus"
SCRAPE_INTERVAL = "1s"
TRITON_JOB = "triton"



def ensure_installed(log=print) -> Path:
    """``/usr/bin/prometheus``, apt-installing Debian's ``prometheus`` package if it is missing.

    The package's own service is not started (no init system here; we run the binary ourselves).
    """
    if PROMETHEUS.exists():
        return PROMETHEUS
    started = time.monotonic()
    apt_install([APT_PACKAGE], log=lambda m: log(f"[tools] {m}"))
    if not PROMETHEUS.exists():
        raise RuntimeError(f"apt-get installed {APT_PACKAGE} but {PROMETHEUS} is missing")
    log(f"[tools] Prometheus installed in {time.monotonic() - started:.0f}s")
    return PROMETHEUS


def config_yaml(targets_file: Path) -> str:
    """The generated prometheus.yml: one job, its targets from ``targets_file`` (file_sd, 1 s)."""
    # JSON is YAML: no YAML library needed, and no quoting surprises.
    return json.dumps({
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL,
                   "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": TRITON_JOB,
            "metrics_path": "/metrics",
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        }],
    }, indent=2) + "\n"


class PrometheusError(RuntimeError):
    pass


class PrometheusProcess(LoopbackProcess):
    """``/usr/bin/prometheus`` on 127.0.0.1:PORT with a temporary TSDB; a context manager."""

    name = "prometheus"
    error = PrometheusError

    def __init__(self, workdir: Path | None = None, port: int | None = None,
                 binary: Path = PROMETHEUS, retention: str = "1h"):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="peakserve-prometheus-"))
        self.port = port
        self.binary = Path(binary)
        self.retention = retention
        self.config_file = self.workdir / "prometheus.yml"
        self.targets_file = self.workdir / "targets.json"
        self.tsdb = self.workdir / "tsdb"
        self.log_path = self.workdir / "prometheus.log"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> PrometheusProcess:
        if self.running:
            raise RuntimeError("already running")
        if not self.binary.exists():
            raise PrometheusError(f"{self.binary} is missing: run `make tools` "
                                  "(python -m peakserve_harness.metrics.prometheus install)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.set_targets([])
        self.config_file.write_text(config_yaml(self.targets_file))
        self.launch(timeout)
        return self

    def argv(self) -> list[str]:
        return [str(self.binary), f"--config.file={self.config_file}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.tsdb}",
                f"--storage.tsdb.retention.time={self.retention}",
                "--log.level=warn"]

    def probe(self) -> bool:
        try:
            with DIRECT.open(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except urllib.error.URLError:
            return False

    def stop(self, timeout: float = 10) -> None:
        self.stop_process(timeout)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ targets and queries
    def set_targets(self, targets: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        """Replace the scraped targets: ``[("127.0.0.1:8002", {"namespace": ..., "pod": ...}), ...]``.

        Written atomically (a temporary file renamed over the old one), so Prometheus never
        reads half a file; it picks the change up within a second.
        """
        groups = [{"targets": [host_port], "labels": dict(labels)} for host_port, labels in targets]
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.workdir, prefix=".targets-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(groups, f, indent=2)
        os.replace(tmp, self.targets_file)

    def _api(self, path: str, params: Mapping[str, str] | None = None, timeout: float = 10) -> object:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with DIRECT.open(url, timeout=timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params or {})}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        """An instant query; the result vector: ``[{"metric": {...}, "value": [ts, "1.5"]}, ...]``."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._api("query", params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_value(self, promql: str, at: float | None = None) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(promql, at)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{promql!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def active_targets(self) -> list[dict]:
        return self._api("targets", {"state": "active"})["activeTargets"]

    def wait_scraped(self, host_port: str, timeout: float = 30) -> dict:
        """Wait until ``host_port`` is an active target whose last scrape succeeded."""
        deadline = time.monotonic() + timeout
        last: list[dict] = []
        while time.monotonic() < deadline:
            last = [t for t in self.active_targets() if t["scrapeUrl"].split("/")[2] == host_port]
            if last and last[0]["health"] == "up":
                return last[0]
            time.sleep(0.2)
        raise PrometheusError(f"target {host_port} not scraped within {timeout}s: {last}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m peakserve_harness.metrics.prometheus")
    parser.add_argument("command", choices=["install"])
    parser.parse_args(argv)
    print(f"prometheus={ensure_installed(lambda m: print(m, file=sys.stderr, flush=True))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
