"""An extension API server behind the kube-apiserver's aggregation layer (prometheus-adapter, KEDA's metrics
server): the checks both need before and after registering their APIServices."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from .loopback_process import LoopbackProcess


def check_aggregation_layer(kube: Any, error: type[Exception]) -> None:
    """The kube-apiserver publishes its front-proxy CA for extension servers; a control plane started before
    DevCluster passed the requestheader flags has none, and every proxied request would reach the extension
    server unauthenticated."""
    cm = kube.call("GET", "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication")
    if not cm.get("data", {}).get("requestheader-client-ca-file"):
        raise error("the kube-apiserver runs without the aggregation-layer flags (--requestheader-*, "
                    "--proxy-client-*): restart the control plane (`peakserve-dev down && peakserve-dev up`)")


def available_conditions(kube: Any, group: str, versions: Iterable[str]) -> dict[str, dict]:
    """The Available condition of each version's APIService."""
    found = {}
    for version in versions:
        obj = kube.call("GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{group}")
        found[version] = next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Available"),
                              {})
    return found


def wait_available(kube: Any, group: str, versions: Iterable[str], processes: Iterable[LoopbackProcess],
                   error: type[Exception], timeout: float, logs: Callable[[], str] = str) -> None:
    """Until every APIService is Available and the API server proxies discovery to the extension server;
    `error` at once when one of its `processes` exits, or at the deadline (with what `logs()` returns then appended)."""
    versions, processes = list(versions), list(processes)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for proc in processes:
            if not proc.running:
                raise error(f"{proc.name} exited; log:\n{proc.log_tail()}")
        last = available_conditions(kube, group, versions)
        if all(c.get("status") == "True" for c in last.values()):
            try:
                for version in versions:
                    kube.call("GET", f"/apis/{group}/{version}")
                return
            except Exception as err:  # noqa: BLE001 - keep polling until the deadline
                last = err
        time.sleep(0.2)
    raise error(f"{group} not available within {timeout}s: {last}{logs()}")
