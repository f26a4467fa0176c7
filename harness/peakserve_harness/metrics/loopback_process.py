"""A server process on a loopback port, as the local metrics stack runs them (Prometheus, the adapter).

free_port() then bind can lose a race with another process, so start() retries on a fresh port when
the log says the address was taken. Each process gets its own session, and stop() signals the whole
group, so nothing it spawned outlives it.
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
from typing import Callable

from ..loopback import free_port

START_ATTEMPTS = 3


class LoopbackProcess:
    """Subclasses set `name`, `error`, `workdir`, `log_path` and `port`, and give argv() and probe()."""

    name = "process"
    error: type[Exception] = RuntimeError
    workdir: Path
    log_path: Path
    port: int | None
    _proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def probe(self) -> bool:
        """One readiness check: True once the process serves."""
        raise NotImplementedError

    @staticmethod
    def serves_https(url: str, ca_file: Path) -> bool:
        """`url`/healthz answers over TLS trusted by `ca_file` (any HTTP status means it serves): the probe of
        the API servers run here (prometheus-adapter, KEDA's metrics server)."""
        ctx = ssl.create_default_context(cafile=str(ca_file))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        try:
            with opener.open(f"{url}/healthz", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except urllib.error.URLError:
            return False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def launch(self, timeout: float) -> None:
        """Start argv() on a free port (or the given one) and wait until probe() says it serves."""
        fixed_port = self.port is not None
        for attempt in range(START_ATTEMPTS):
            if not fixed_port:
                self.port = free_port()
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
            try:
                self.wait_until(self.probe, timeout)
                return
            except self.error:
                taken = "address already in use" in self.log_tail()
                self.stop_process()
                if fixed_port or not taken or attempt == START_ATTEMPTS - 1:
                    raise

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise self.error(f"{self.name} exited with {self._proc.returncode}; "
                                 f"log {self.log_path}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise self.error(f"{self.name} not ready after {timeout}s; log {self.log_path}:\n{self.log_tail()}")

    def stop_process(self, timeout: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except FileNotFoundError:
            return ""
