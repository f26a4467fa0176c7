"""The kopf wiring, and nothing else: settings, handlers, and the operator's start.

Every handler hands its object to the Runtime in kopf's memo (runtime.py), which runs one
observe -> decide -> act pass.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from typing import Any, Callable

import kopf
from prometheus_client import start_http_server

from .. import api
from ..cluster.client import ApiException, Kube, resource_path
from ..decide import CHILD, SPEC
from ..render.names import ANNOTATION_MD, MANAGER, label_selector
from .drift import drift_loop
from .runtime import Runtime

log = logging.getLogger("peakserve")

CHILD_SELECTOR = {"app.kubernetes.io/managed-by": MANAGER}


def _emitter(kube: Kube) -> Callable[[dict[str, Any], str, str, str], None]:
    """Every Event is posted here, whichever pass made it: kopf.event works only inside kopf's handlers (it raises
    LookupError in the drift loop and the wake-up timers, where a PromotionReady change is often first seen)."""
    return lambda body, event_type, reason, message: _post_event(kube, body, event_type, reason, message[:1000])


def _post_event(kube: Kube, body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
    meta = body["metadata"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": body.get("apiVersion", api.API_VERSION), "kind": body.get("kind", api.KIND),
                           "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": event_type, "reason": reason, "message": message, "action": "Reconcile",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "source": {"component": MANAGER}, "reportingComponent": MANAGER, "reportingInstance": MANAGER,
    }
    try:
        kube.create(resource_path("v1", "Event", meta["namespace"]), event)
    except ApiException as err:  # an Event is best effort; the status already says it
        log.warning("event %s for %s/%s not posted: %s", reason, meta["namespace"], meta["name"], err.reason)


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
def converge_handler(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    try:
        memo.runtime.reconcile(namespace, name, SPEC)
    except ApiException as err:
        # Conflicts and server trouble heal by themselves; retry soon rather than crash.
        raise kopf.TemporaryError(f"API error {err.status}: {err.reason}", delay=5) from err


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL, optional=True)
def forget(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.forget(namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_SELECTOR)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=CHILD_SELECTOR)
@kopf.on.event("", "v1", "pods", labels=CHILD_SELECTOR)
@kopf.on.event("batch", "v1", "jobs", labels=CHILD_SELECTOR)
def child_changed(body: kopf.Body, namespace: str, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Children report back: Deployment rollout, HPA state, pod scheduling and build Jobs all feed status."""
    owner = (body.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_MD)
    if type is None or not owner:  # the initial listing: resume handlers cover it
        return
    try:
        memo.runtime.reconcile(namespace, owner, CHILD)
    except ApiException as err:
        if err.status not in (404, 409):
            log.warning("status refresh for %s/%s failed: %s", namespace, owner, err.reason)


def run_operator(namespaces: list[str], health_address: str, metrics_address: str,
                 drift_interval: float, peering: str | None) -> int:
    kube = Kube.from_kubeconfig()
    runtime = Runtime(kube, _emitter(kube))
    stop = threading.Event()
    threading.Thread(target=drift_loop, name="drift", daemon=True,
                     args=(runtime, namespaces, drift_interval, stop)).start()
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
        memo=kopf.Memo(runtime=runtime),
    ))
    stop.set()
    return 0
