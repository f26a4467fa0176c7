"""The real ``tritonserver`` (python backend only, CPU) as a local process, for tests and the demo.

``LocalTriton(repo)`` starts the binary installed by :mod:`peakserve_harness.triton.install` on free
127.0.0.1 ports (or, with ``host=``/``ports=``, on a given loopback address and fixed ports, as the
pod agent does for a pod IP) with ``--strict-readiness=true`` and ``--model-control-mode=none``, logging to a
file; :meth:`LocalTriton.wait_ready` polls ``/v2/health/ready``. Serve a built repository through
:func:`peakserve_harness.triton.python_backend.local_repository` first.

The python backend runs each model instance in a stub process (``triton_python_backend_stub``,
built for one Python minor version) that embeds ``libpython3.X``. The stub runs models in the
tool virtualenv of :mod:`peakserve_harness.triton.install` (numpy<2 and onnxruntime), not in the project's
environment: its pybind11 numpy bindings corrupt numpy 2 tensors. See :func:`server_env`.

Several servers can run at once: each gets its own ports, work directory, backend directory
and process group (the python backend names its shared-memory regions with a UUID).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import urllib.error
import weakref
from pathlib import Path
from typing import Sequence

from ..loopback import DIRECT, free_port
from .install import TritonPaths, tritonserver_paths

_PORT_IN_USE = re.compile(r"already in use", re.IGNORECASE)
_ERROR_LINE = re.compile(r"^(E\d{4} |error: )")
_BENIGN = ("CudaDriverHelper has not been initialized",)  # no GPU here: always logged
_START_ATTEMPTS = 3  # fresh ports after a lost port race


_reserved: set[int] = set()  # ports handed to servers of this process and not yet released
_reserved_lock = threading.Lock()


class TritonStartError(RuntimeError):
    """The server exited or was not ready in time; the message ends with the log's tail."""


def _reserve_port() -> int:
    with _reserved_lock:
        for _ in range(50):
            port = free_port()
            if port not in _reserved:
                _reserved.add(port)
                return port
    raise RuntimeError("no free port found")


def _release_ports(ports: Sequence[int]) -> None:
    with _reserved_lock:
        _reserved.difference_update(ports)


def server_env(paths: TritonPaths, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: its shared libraries, and the Python the stubs run models in.

    The stub embeds ``libpython3.X`` with an *isolated* configuration (PYTHONPATH and PYTHONHOME
    are ignored). Like PyTriton, we put the tool virtualenv's ``bin`` first on ``PATH``: the
    embedded interpreter looks its program name up there, finds that virtualenv's ``python`` and
    ``pyvenv.cfg``, and so gets ``sys.prefix`` = the virtualenv and its site-packages (numpy<2,
    onnxruntime), with the base installation's standard library. That Python's LIBDIR goes first on
    ``LD_LIBRARY_PATH`` so that the stub embeds exactly that libpython, not a system one.
    """
    env = dict(os.environ if base is None else base)
    libs = [str(paths.libpython_dir)] if paths.libpython_dir else []
    libs.append(str(paths.libs_dir))
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join(p for p in (str(paths.python_env / "bin"), env.get("PATH")) if p)
    env.setdefault("PEAKSERVE_ORT_INTRA_OP_THREADS", "1")
    return env


def _backend_directory(paths: TritonPaths, root: Path) -> Path:
    """``root/python/`` with the python backend library, its utils module and the matching stub."""
    python = root / "python"
    python.mkdir(parents=True, exist_ok=True)
    for src, name in ((paths.python_backend / "libtriton_python.so", "libtriton_python.so"),
                      (paths.python_backend / "triton_python_backend_utils.py",
                       "triton_python_backend_utils.py"),
                      (paths.stub, "triton_python_backend_stub")):
        dst = python / name
        if not dst.exists():
            os.symlink(src, dst)
    return root


def _kill_unreaped(proc: subprocess.Popen) -> None:
    """SIGKILL the server's process group unless the server was reaped (then the id may be reused)."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _answers_ok(url: str) -> bool:
    """``url`` answers 200 within 2 s."""
    try:
        with DIRECT.open(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalTriton:
    """A local tritonserver process serving ``model_repository``; a context manager.

    ``with LocalTriton(repo) as server: server.wait_ready(30); ...`` -- leaving the block stops it.
    """

    def __init__(self, model_repository: str | Path, *, workdir: Path | None = None,
                 extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 log_verbose: int = 0, host: str = "127.0.0.1",
                 ports: tuple[int, int, int] | None = None):
        """``host``: the address all three endpoints bind; ``ports``: fixed (http, grpc, metrics)
        ports instead of free ones. A server on fixed ports is never moved to other ports: when
        they are taken it fails to start (TritonStartError) like a container whose port is taken."""
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        self._fixed_ports = tuple(ports) if ports else None
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="peakserve-triton-")) if workdir is None \
            else Path(workdir)
        self.log_path = self.workdir / "tritonserver.log"
        self._extra_args = list(extra_args)
        self._env = env
        self._log_verbose = log_verbose
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._log_start = 0
        self._terminated = False
        self._finalizer: weakref.finalize | None = None
        # Triton's server id (``GET /v2`` "name"): wait_ready checks that the ready server on "our"
        # port really is this one, not another that won a port race against it.
        self.server_id = f"peakserve-{uuid.uuid4().hex[:12]}"
        self._ports: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalTriton:
        if self.running:
            raise RuntimeError("already running")
        self._reap()  # a previous run that exited on its own
        paths = tritonserver_paths()
        self.workdir.mkdir(parents=True, exist_ok=True)
        backends = _backend_directory(paths, self.workdir / "backends")
        self._release()
        self._ports = self._fixed_ports or (_reserve_port(), _reserve_port(), _reserve_port())
        http, grpc, metrics = self._ports
        cmd = [str(paths.binary),
               f"--id={self.server_id}",
               f"--model-repository={self.model_repository}",
               f"--backend-directory={backends}",
               "--http-address", self.host, "--http-port", str(http),
               "--grpc-address", self.host, "--grpc-port", str(grpc),
               "--metrics-address", self.host, "--metrics-port", str(metrics),
               "--allow-gpu-metrics=false",
               "--strict-readiness=true",
               "--model-control-mode=none",
               "--exit-on-error=true",
               # The configs are complete; auto-complete would only start one more stub per model.
               "--disable-auto-complete-config",
               f"--log-verbose={self._log_verbose}",
               *self._extra_args]
        self._terminated = False
        self._log_file = open(self.log_path, "ab")
        self._log_start = self._log_file.tell()
        self._log_file.write(f"[peakserve] $ {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                      stderr=subprocess.STDOUT, env=server_env(paths, self._env),
                                      cwd=self.workdir, start_new_session=True)
        # Safety net: a server its owner forgot to stop dies with this interpreter.
        self._finalizer = weakref.finalize(self, _kill_unreaped, self._proc)
        return self

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> float:
        """Poll ``/v2/health/ready`` until 200; return the seconds waited.

        Raises TritonStartError (the log's error lines, then its tail) when the server exits (it is
        reaped, with its stubs) or is not ready within ``timeout`` (it is left running: stop() it,
        as leaving the ``with`` block does). Ready means: ``/v2/health/ready`` is 200 (strict: all
        models loaded and warmed up) from a server whose ``/v2`` name is this one's ``server_id``,
        and its metrics endpoint answers (Triton starts it after the HTTP endpoint, so a scrape
        right after a bare health check can be refused).
        A server that lost a port race is restarted on fresh ports (at most twice), unless its ports
        are fixed.
        """
        if self._proc is None:
            raise RuntimeError("not started")
        t0 = time.monotonic()
        deadline = t0 + timeout
        restarts = 0
        while True:
            if not self.running:
                self._killpg()  # stubs the server left behind
                code = self._reap()
                tail = self.log_tail()
                if _PORT_IN_USE.search(self._log_since_start()) and restarts < _START_ATTEMPTS - 1 \
                        and self._fixed_ports is None and time.monotonic() < deadline:
                    restarts += 1
                    self.start()
                    continue
                raise TritonStartError(
                    f"tritonserver exited with code {code} before it was ready; "
                    f"{self._failure_report(tail)}")
            if self.is_ready() and self.is_ours() and self.serves_metrics() and self.running:
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                raise TritonStartError(
                    f"tritonserver was not ready within {timeout:.0f}s; "
                    f"{self._failure_report(self.log_tail())}")
            time.sleep(interval)

    def _failure_report(self, tail: str) -> str:
        """The log's error lines (model load errors come early, before long tables), then its tail."""
        errors = self.error_lines()
        report = ""
        if errors:
            report = "errors in the log:\n" + "\n".join(errors) + "\n"
        return f"{report}log {self.log_path}, tail:\n{tail}"

    def error_lines(self, max_lines: int = 20, max_chars: int = 2000, *, this_run: bool = False) -> list[str]:
        """Triton's error lines (``E<MMDD> ...``) and the final ``error: ...`` line, shortened.

        ``this_run``: only from the log of the latest start (a restarted server appends to its log).
        """
        text = self._log_since_start() if this_run else self.log_text()
        found = [line if len(line) <= max_chars else line[:max_chars] + " ..."
                 for line in text.splitlines()
                 if _ERROR_LINE.match(line) and not any(b in line for b in _BENIGN)]
        return found[:max_lines]

    def is_ours(self) -> bool:
        """The server answering on this server's HTTP port is this one (its `/v2` name is our server_id)."""
        try:
            with DIRECT.open(f"{self.http_url}/v2", timeout=2) as r:
                return json.loads(r.read()).get("name") == self.server_id
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def serves_metrics(self) -> bool:
        return _answers_ok(self.metrics_url)

    def is_ready(self) -> bool:
        return _answers_ok(f"{self.http_url}/v2/health/ready")

    def terminate(self) -> None:
        """Send SIGTERM without waiting (Triton takes ~3 s to exit: signal many, then stop() each)."""
        if self._proc is not None and self._proc.returncode is None and not self._terminated:
            try:
                self._proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._terminated = True

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the server, SIGKILL its process group after ``timeout``; always reap.

        Returns the server's exit code (None when it was never started). A work directory this
        object made itself is removed after a clean exit (0) and kept, with the log, otherwise.
        """
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.returncode is None:
                self.terminate()
                if not self._wait_exit(timeout):
                    self._killpg()
                    self._wait_exit(5.0)
            # The leader is a zombie (or gone), so its pgid cannot have been reused: finish off any
            # python backend stubs left in the group, then reap the leader.
            self._killpg()
            code = self._reap()
            if code == 0 and self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            return code
        finally:
            self._release()

    def _wait_exit(self, timeout: float) -> bool:
        """Wait for the server to exit without reaping it (its pid keeps owning the group)."""
        proc = self._proc
        deadline = time.monotonic() + timeout
        while True:
            if proc.returncode is not None:
                return True
            try:
                info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True
            if info is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _killpg(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return  # reaped: the group id may belong to someone else now
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> int | None:
        proc = self._proc
        code = None
        if proc is not None:
            if proc.returncode is None:
                try:
                    code = proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._killpg()
                    code = proc.wait(timeout=10)
            else:
                code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        return code

    def _release(self) -> None:
        if self._ports and self._fixed_ports is None:
            _release_ports(self._ports)

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ facts
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """The server process has been started and has not exited (checked without reaping it)."""
        return self._proc is not None and not self._wait_exit(0)

    @property
    def returncode(self) -> int | None:
        """The exit code once stop() (or a failed wait_ready) has reaped the server."""
        return self._proc.returncode if self._proc else None

    def _port(self, i: int) -> int:
        if self._ports is None:
            raise RuntimeError("not started")
        return self._ports[i]

    @property
    def http_url(self) -> str:
        """``http://HOST:PORT`` (tritonclient.http wants it without the scheme: use http_address)."""
        return f"http://{self.host}:{self._port(0)}"

    @property
    def http_address(self) -> str:
        return f"{self.host}:{self._port(0)}"

    @property
    def grpc_url(self) -> str:
        """``HOST:PORT``, as tritonclient.grpc takes it."""
        return f"{self.host}:{self._port(1)}"

    @property
    def metrics_address(self) -> str:
        """``HOST:PORT`` of the metrics endpoint, as a Prometheus target."""
        return f"{self.host}:{self._port(2)}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self._port(2)}/metrics"

    def _log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, max_chars: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_chars))
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m peakserve_harness.triton.server REPO``: serve REPO until interrupted (for poking at it)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("repository", type=Path)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    with LocalTriton(args.repository) as server:
        waited = server.wait_ready(args.timeout)
        print(f"ready in {waited:.1f}s: http={server.http_url} grpc={server.grpc_url} "
              f"metrics={server.metrics_url} log={server.log_path}", flush=True)
        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        signal.sigwait(signals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
