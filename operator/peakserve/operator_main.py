"""The kopf wiring. Handlers stay thin: each one calls reconcile.py."""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections import defaultdict
from typing import Any

import kopf
from prometheus_client import start_http_server

from . import api, conditions, metrics
from .drift import drift_loop
from .kube import ApiException, Kube
from .reconcile import owner_name, reconcile, refresh_status
from .render.names import MANAGER, label_selector

log = logging.getLogger("peakserve")

KUBE: Kube | None = None
CHILD_SELECTOR = {"app.kubernetes.io/managed-by": MANAGER}

# One status writer per ModelDeployment at a time. Handlers run in a thread pool, and a child
# event racing a reconcile would otherwise compare against stale status: duplicate Events,
# and an older observation overwriting a newer one.
_LOCKS: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def _kube() -> Kube:
    global KUBE
    if KUBE is None:
        KUBE = Kube.from_kubeconfig()
    return KUBE


def _emit(body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
    kopf.event(body, type=event_type, reason=reason, message=message[:1000])


def _ready_of(status: dict[str, Any]) -> str:
    return conditions.find(status.get("conditions"), conditions.READY).get("status", "Unknown")


def _key(body: Any) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def _fresh(namespace: str, name: str) -> dict[str, Any] | None:
    """The object as it is now (our own last status included), or None once it is going away."""
    body = _kube().get(api.API_VERSION, api.KIND, namespace, name)
    return None if body is None or body["metadata"].get("deletionTimestamp") else body


def _run_reconcile(body: Any) -> None:
    started = time.perf_counter()
    key = _key(body)
    try:
        with _LOCKS[key]:
            current = _fresh(body["metadata"]["namespace"], body["metadata"]["name"])
            if current is None:
                return
            outcome = reconcile(_kube(), current, _emit)
    except ApiException as err:
        metrics.RECONCILE_ERRORS.labels(error=f"http_{err.status}").inc()
        metrics.RECONCILES.labels(result="error").inc()
        # Conflicts and server trouble heal by themselves; retry soon rather than crash.
        raise kopf.TemporaryError(f"API error {err.status}: {err.reason}", delay=5) from err
    except Exception:
        metrics.RECONCILE_ERRORS.labels(error="exception").inc()
        metrics.RECONCILES.labels(result="error").inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    metrics.RECONCILES.labels(result="invalid" if outcome.invalid else "success").inc()
    metrics.record_ready(key, _ready_of(outcome.status))
    _wake_at(body, outcome.requeue_at)


# One pending wake-up per ModelDeployment: the moment its promotion floor changes next.
_WAKEUPS: dict[str, threading.Timer] = {}
_WAKEUPS_LOCK = threading.Lock()


def _wake_at(body: Any, moment: Any) -> None:
    """Reconcile again exactly when the floor changes; the drift loop alone could be minutes late."""
    key = _key(body)
    with _WAKEUPS_LOCK:
        old = _WAKEUPS.pop(key, None)
        if old:
            old.cancel()
        if moment is None:
            return
        delay = max(0.0, (moment - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) + 0.5
        meta = {"metadata": {"namespace": body["metadata"]["namespace"], "name": body["metadata"]["name"]}}
        timer = threading.Timer(delay, _drift_reconcile, args=(meta,))
        timer.daemon = True
        _WAKEUPS[key] = timer
        timer.start()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # status.* is pruned by our schema, so kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events describe transitions; skip kopf's chatter
    settings.watching.server_timeout = 300   # watches can go quiet; reconnect regularly
    settings.watching.client_timeout = 330
    # The watched resources are fixed: no need to observe CRDs and namespaces (nor the RBAC to do so).
    settings.scanning.disabled = True
    settings.execution.max_workers = 16
    # Filter child watches on the server: otherwise every Deployment and Pod event in the
    # cluster is sent to us and decoded, only to be dropped by the handlers' label filter.
    selector = label_selector(CHILD_SELECTOR)
    for resource in (("apps", "deployments"), ("autoscaling", "horizontalpodautoscalers"), ("v1", "pods"),
                     ("batch", "jobs")):
        settings.watching.label_selectors[resource] = selector


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL)
def converge_handler(body: kopf.Body, **_: Any) -> None:
    _run_reconcile(body)


def _drift_reconcile(body: dict[str, Any]) -> None:
    """Level-triggered safety net: re-apply desired state even when no event arrived."""
    try:
        _run_reconcile(body)
    except kopf.TemporaryError as err:  # the next pass retries
        log.warning("drift check of %s: %s", _key(body), err)


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
def forget(body: kopf.Body, **_: Any) -> None:
    # Children go with the owner through ownerReferences; only the gauge needs updating.
    metrics.record_ready(_key(body), None)
    _LOCKS.pop(_key(body), None)
    _wake_at(body, None)


def _refresh_owner(namespace: str, child: dict[str, Any]) -> None:
    name = owner_name(child)
    if not name:
        return
    with _LOCKS[f"{namespace}/{name}"]:
        body = _fresh(namespace, name)
        if body is None:
            return
        status = refresh_status(_kube(), body, _emit)
    metrics.record_ready(_key(body), _ready_of(status))


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_SELECTOR)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=CHILD_SELECTOR)
@kopf.on.event("", "v1", "pods", labels=CHILD_SELECTOR)
@kopf.on.event("batch", "v1", "jobs", labels=CHILD_SELECTOR)
def child_changed(body: kopf.Body, namespace: str, type: str | None, **_: Any) -> None:
    """Children report back: Deployment rollout, HPA state, pod scheduling and build Jobs all feed status."""
    if type is None:  # the initial listing; resume handlers cover it
        return
    try:
        _refresh_owner(namespace, dict(body))
    except ApiException as err:
        if err.status not in (404, 409):
            log.warning("status refresh for %s/%s failed: %s", namespace, body["metadata"]["name"], err.reason)


def run_operator(namespaces: list[str], health_address: str, metrics_address: str,
                 drift_interval: float, peering: str | None) -> int:
    stop = threading.Event()
    threading.Thread(target=drift_loop, name="drift", daemon=True,
                     args=(_kube(), namespaces, drift_interval, _drift_reconcile, stop)).start()
    host, _, port = metrics_address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
    kopf.configure(verbose=False)
    # kopf logs every handler run at INFO (thousands of lines under load); we log transitions instead.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    health_host, _, health_port = health_address.rpartition(":")
    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{health_host or '0.0.0.0'}:{health_port}/healthz",
        standalone=peering is None,
        peering_name=peering,
    ))
    stop.set()
    return 0
