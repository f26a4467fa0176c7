"""The drift check: every ModelDeployment is reconciled again once per interval, even when no event came.

One loop lists the ModelDeployments and spreads their passes evenly over the interval. That is steadier
than a kopf timer per object, which fires in bursts for objects created together. It also needs no
finalizer: kopf puts one on every object that has a timer, so deleting a ModelDeployment would hang
whenever the operator is not running, for example after `helm uninstall`.

The loop keeps only the names (listed as metadata, a page at a time) and queues each one with the lowest
priority: a drift pass never delays a child event's, and merges with one already waiting.
"""

from __future__ import annotations

import logging
import threading
import time

from .. import api
from ..decide import DRIFT
from .runtime import FIRST, Runtime

log = logging.getLogger("peakserve.drift")


def drift_loop(runtime: Runtime, namespaces: list[str], interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        started = time.monotonic()
        try:
            keys = [(meta["namespace"], meta["name"]) for ns in (namespaces or [None])
                    for meta in runtime.kube.list_metadata(api.API_VERSION, api.KIND, ns)]
        except Exception as err:  # the next pass tries again
            log.warning("drift check could not list ModelDeployments: %s", err)
            continue
        for index, (namespace, name) in enumerate(keys):
            if stop.wait(max(0.0, started + index * interval / len(keys) - time.monotonic())):
                return
            runtime.submit(namespace, name, DRIFT, FIRST)
