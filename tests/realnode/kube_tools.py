"""kubectl as the real-node tests use it: JSON reads, a pod watch that keeps every version seen, a port-forward
on loopback, and timestamped container logs. Every call is bounded in time."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from peakserve.api.timestamps import parse_rfc3339  # noqa: F401 - the API server's and the CRI's times

from integration.cluster import condition, json_documents, wait_for  # noqa: F401 - shared with every suite


def kubectl(argv: list[str], *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> str:
    proc = subprocess.run([*argv, *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def get_json(argv: list[str], *args: str) -> dict[str, Any]:
    return json.loads(kubectl(argv, "get", *args, "-o", "json"))


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def watch_pods(argv: list[str], namespace: str, selector: str) -> Iterator[Callable[[], list[tuple[float, dict]]]]:
    """`kubectl get pods --watch`: every version of the selected pods while the block runs, with the wall
    time it arrived (polling could miss the brief running-but-not-started state)."""
    proc = subprocess.Popen([*argv, "get", "pods", "-n", namespace, "-l", selector, "--watch", "-o", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen: list[tuple[float, dict]] = []

    def read() -> None:
        for obj in json_documents(proc.stdout):
            seen.append((time.time(), obj))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield lambda: list(seen)
    finally:
        _stop(proc)
        reader.join(timeout=5)


@contextlib.contextmanager
def port_forward(argv: list[str], namespace: str, target: str, port: int, log: Path,
                 timeout: float = 30) -> Iterator[int]:
    """`kubectl port-forward --address 127.0.0.1 TARGET :PORT`; yields the local port. Output goes to a file,
    so that its per-connection lines never fill a pipe."""
    with open(log, "w") as out:
        proc = subprocess.Popen([*argv, "-n", namespace, "port-forward", "--address", "127.0.0.1", target, f":{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {port}", log.read_text())
            if found:
                yield int(found.group(1))
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"port-forward to {target}:{port} not up after {timeout}s: {log.read_text()}")
    finally:
        _stop(proc)


def timestamped_logs(argv: list[str], namespace: str, pod: str, container: str) -> list[tuple[dt.datetime, str]]:
    """The container's log lines with the times the runtime recorded them (the node's clock)."""
    text = kubectl(argv, "logs", "-n", namespace, pod, "-c", container, "--timestamps")
    lines = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            lines.append((parse_rfc3339(stamp), rest))
        except ValueError:
            continue
    return lines
