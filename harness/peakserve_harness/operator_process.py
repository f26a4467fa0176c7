"""`peakserve run` as a child process against a kubeconfig, as tests and benchmarks need it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from .loopback import free_port


# peakserve as this virtualenv has it (the dev install, with every extra).
DEV_COMMAND = (sys.executable, "-m", "peakserve.cli")


class OperatorProcess:
    """Runs `<command> run --health-address=127.0.0.1:<free port> --metrics-address=127.0.0.1:<free port>`,
    then --drift-interval when one is given, then `args`. `command` starts peakserve: by default this
    virtualenv's; the `peakserve` script of another install (tests run the core-only wheel so)."""

    def __init__(self, kubeconfig: Path, log_path: Path, drift_interval: float | None = None,
                 command: Sequence[str] = DEV_COMMAND, args: Sequence[str] = ()):
        self.kubeconfig, self.log_path, self.drift_interval = kubeconfig, log_path, drift_interval
        self.command, self.args = [str(c) for c in command], list(args)
        self.health_port, self.metrics_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []

    def start(self, timeout: float = 60) -> None:
        drift = [] if self.drift_interval is None else [f"--drift-interval={self.drift_interval:g}"]
        self.argv = [*self.command, "run",
                     f"--health-address=127.0.0.1:{self.health_port}",
                     f"--metrics-address=127.0.0.1:{self.metrics_port}",
                     *drift, *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}\n{self.tail()}")
            if self.healthy():
                return
            time.sleep(0.3)
        raise RuntimeError(f"operator not healthy after {timeout}s\n{self.tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metrics(self) -> dict[str, float]:
        """peakserve_* samples (counters, gauges, histogram sum/count) by their full series name."""
        out: dict[str, float] = {}
        for line in self.metrics_text().splitlines():
            if line.startswith("peakserve_") and "_bucket" not in line and "_created" not in line:
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no operator log)"

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()
