"""The running operator's state, in one object: the client, one lock per ModelDeployment, wake-up
timers and API discovery. `reconcile` is one pass: observe -> decide -> act.

kopf's handlers (handlers.py), the drift loop (drift.py) and the wake-up timers all call `reconcile`;
nothing else reads or writes the cluster on a ModelDeployment's behalf.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time

from ..api.validation import spec_or_reason
from ..cluster.act import EventSink, Rejected, act
from ..cluster.client import ApiException, Kube
from ..cluster.observe import Discovery, observe, read_model_deployment
from ..decide import WAKE, decide
from ..decide.conditions import READY
from ..decide.plan import Plan, status_dict
from . import metrics

log = logging.getLogger("peakserve.runtime")


class Runtime:
    def __init__(self, kube: Kube, emit: EventSink):
        self.kube = kube
        self.emit = emit
        self.discovery = Discovery(kube)
        # One pass per ModelDeployment at a time: handlers run in a thread pool, and a child event racing
        # a reconcile would otherwise compare against stale status (duplicate Events, older overwriting newer).
        self._locks: dict[str, threading.Lock] = {}
        # One pending wake-up per ModelDeployment: the moment its promotion floor changes next.
        self._timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()

    def reconcile(self, namespace: str, name: str, cause: str) -> Plan | None:
        """One pass. Returns the plan it carried out; None when the object is gone."""
        key = f"{namespace}/{name}"
        started = time.perf_counter()
        try:
            with self._locks.setdefault(key, threading.Lock()):  # setdefault: one lock even when two race
                plan = self._pass(namespace, name, cause)
        except Exception as err:  # counted here, retried by kopf or the next drift pass
            kind = f"http_{err.status}" if isinstance(err, ApiException) else "exception"
            metrics.RECONCILE_ERRORS.labels(error=kind).inc()
            metrics.RECONCILES.labels(result="error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if plan is None:
            return None
        metrics.RECONCILES.labels(result="invalid" if plan.invalid else "success").inc()
        metrics.record_ready(key, next((c.status for c in plan.status.conditions if c.type == READY), "Unknown"))
        metrics.record_autoscaling(namespace, name, plan.status.autoscaling)
        promotion = plan.status.autoscaling.promotion if plan.status.autoscaling else None
        metrics.record_promotion(namespace, name, status_dict(promotion) if promotion else None)
        self.wake_at(namespace, name, plan.wake_at)
        return plan

    def _pass(self, namespace: str, name: str, cause: str) -> Plan | None:
        body = read_model_deployment(self.kube, namespace, name)
        if body is None:
            return None
        spec = spec_or_reason(body.get("spec"))
        now = dt.datetime.now(dt.timezone.utc)
        snapshot = observe(self.kube, body, spec, cause, self.discovery, now)
        plan = decide(spec, snapshot, now)
        try:
            act(self.kube, body, plan, self.emit)
        except Rejected as err:
            plan = decide(spec, dataclasses.replace(snapshot, rejected=str(err)), now)
            act(self.kube, body, plan, self.emit)
        return plan

    def wake_at(self, namespace: str, name: str, moment: dt.datetime | None) -> None:
        """Reconcile again exactly when the floor changes; the drift loop alone could be minutes late."""
        key = f"{namespace}/{name}"
        with self._timers_lock:
            old = self._timers.pop(key, None)
            if old:
                old.cancel()
            if moment is None:
                return
            delay = max(0.0, (moment - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.5
            timer = threading.Timer(delay, self._woken, args=(namespace, name))
            timer.daemon = True
            self._timers[key] = timer
            timer.start()

    def _woken(self, namespace: str, name: str) -> None:
        try:
            self.reconcile(namespace, name, WAKE)
        except Exception as err:  # the drift loop retries
            log.warning("wake-up reconcile of %s/%s failed: %s", namespace, name, err)

    def forget(self, namespace: str, name: str) -> None:
        """The ModelDeployment is gone: its children go with it through ownerReferences."""
        key = f"{namespace}/{name}"
        metrics.record_ready(key, None)
        metrics.record_autoscaling(namespace, name, None)
        metrics.record_promotion(namespace, name, None)
        self._locks.pop(key, None)
        self.wake_at(namespace, name, None)
