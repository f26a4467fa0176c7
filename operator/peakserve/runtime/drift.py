"""The drift check: every ModelDeployment is reconciled again once per interval, even when no event came.

One loop lists the ModelDeployments and spreads their reconciles evenly over the interval. That is
steadier than a kopf timer per object, which fires in bursts for objects created together. It also needs
no finalizer: kopf puts one on every object that has a timer, so deleting a ModelDeployment would hang
whenever the operator is not running, for example after `helm uninstall`.
"""

from __future__ import annotations

import logging
import threading
import time

from .. import api
from ..decide import DRIFT
from .runtime import Runtime

log = logging.getLogger("peakserve.drift")


def drift_loop(runtime: Runtime, namespaces: list[str], interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        started = time.monotonic()
        try:
            items = [md for ns in (namespaces or [None]) for md in runtime.kube.list(api.API_VERSION, api.KIND, ns)]
        except Exception as err:  # the next pass tries again
            log.warning("drift check could not list ModelDeployments: %s", err)
            continue
        for index, body in enumerate(items):
            if stop.wait(max(0.0, started + index * interval / len(items) - time.monotonic())):
                return
            meta = body["metadata"]
            try:
                runtime.reconcile(meta["namespace"], meta["name"], DRIFT)
            except Exception as err:  # one bad object must not stop the others
                log.warning("drift check of %s/%s failed: %s", meta["namespace"], meta["name"], err)
