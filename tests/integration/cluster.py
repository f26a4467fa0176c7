"""Helpers for integration tests: kubectl (the real binary), waiting, and manifests."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import yaml

from peakserve_harness.samples import model_deployment, small_spec

ROOT = Path(__file__).resolve().parents[2]

BASE_SPEC = small_spec()


def md(name: str, namespace: str, **overrides: Any) -> dict[str, Any]:
    """A ModelDeployment; keyword overrides are deep-merged into BASE_SPEC."""
    spec = copy.deepcopy(BASE_SPEC)
    _merge(spec, overrides)
    return model_deployment(name, namespace, spec)


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path):
        self.binary, self.kubeconfig = str(binary), str(kubeconfig)

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.binary, f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], check: bool = True) -> subprocess.CompletedProcess:
        docs = obj if isinstance(obj, list) else [obj]
        return self.run("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--show-managed-fields"] + (["-n", namespace] if namespace else [])
        proc = self.run(*args, check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)

    @contextlib.contextmanager
    def watch(self, kind: str, name: str, namespace: str) -> Iterator[Callable[[], list[dict[str, Any]]]]:
        """`kubectl get --watch`: every version of the object while the block runs, for states too brief to poll.
        Yields a function that returns the versions seen so far."""
        proc = subprocess.Popen([self.binary, f"--kubeconfig={self.kubeconfig}", "get", kind, name, "-n", namespace,
                                 "--watch", "-o", "json"], stdout=subprocess.PIPE, text=True)
        seen: list[dict[str, Any]] = []

        def read() -> None:
            seen.extend(json_documents(proc.stdout))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield lambda: list(seen)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.run(*args).stdout)["items"]


def json_documents(stream: Iterable[str]) -> Iterator[dict[str, Any]]:
    """What `kubectl get --watch -o json` writes: one JSON document after another, each over several lines."""
    decoder, buffer = json.JSONDecoder(), ""
    for line in stream:
        buffer += line
        try:
            obj, end = decoder.raw_decode(buffer.lstrip())
        except ValueError:
            continue
        yield obj
        buffer = buffer.lstrip()[end:]


def wait_for(check: Callable[[], Any], timeout: float = 60, interval: float = 0.3, what: str = "condition") -> Any:
    """Poll until check() returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return {}
