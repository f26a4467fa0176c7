"""The kopf wiring, and nothing else: settings, handlers, and the operator's start.

Every handler queues its object with the Runtime in kopf's memo (runtime.py), whose workers run one
observe -> decide -> act pass per key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import threading
from typing import Any, Callable

import kopf
from prometheus_client import start_http_server

from .. import api
from ..cluster.client import ApiException, Kube, resource_path
from ..decide import CHILD, SPEC
from ..render.names import ANNOTATION_MD, MANAGER, label_selector
from . import metrics
from .bodies import Deployments
from .drift import drift_loop
from .leader import LeaderElection
from .runtime import FIRST, REFRESH, Runtime
from .standby import standby_health

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


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled state: every handler here is an event handler, and kopf's diffs serve only change-detecting
    ones (on.create/update). Building one deep-copied every watched body: a fifth of the operator's CPU at 300
    objects created at once (py-spy, benchmarks/bench_reconcile.py)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # our own Events describe transitions; skip kopf's chatter
    # Watches can go quiet; reconnect regularly. The fault suite shortens it (PEAKSERVE_WATCH_SERVER_TIMEOUT).
    settings.watching.server_timeout = int(os.environ.get("PEAKSERVE_WATCH_SERVER_TIMEOUT", "300"))  # the API wants an integer
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    # The watched resources are fixed: no need to observe CRDs and namespaces (nor the RBAC to do so).
    settings.scanning.disabled = True
    settings.persistence.diffbase_storage = NoDiffBase()
    # Filter child watches on the server: otherwise every Deployment and Pod event in the
    # cluster is sent to us and decoded, only to be dropped by the handlers' label filter.
    selector = label_selector(CHILD_SELECTOR)
    for resource in (("apps", "deployments"), ("autoscaling", "horizontalpodautoscalers"), ("v1", "pods"),
                     ("batch", "jobs")):
        settings.watching.label_selectors[resource] = selector


# Every handler below only queues a pass (runtime.submit) and returns: it runs on kopf's event loop, holds no
# thread and no body once it returns, and the queue merges what is already waiting (runtime/workqueue.py).
# They are watch handlers, not kopf's create/update/resume: kopf then keeps no state on the objects (no
# annotations, no patches of its own) and no handler progress, and retries are the queue's.

@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def model_deployment_changed(body: kopf.Body, name: str, namespace: str, type: str | None,
                                   memo: kopf.Memo, **_: Any) -> None:
    """Created, found at start (resume), spec changed, or deleted."""
    runtime = memo.runtime
    if type == "DELETED":
        runtime.forget(namespace, name)
        return
    runtime.saw(namespace, name, dict(body))
    if type == "ADDED" or (type is None and not runtime.known(namespace, name)):
        runtime.submit(namespace, name, SPEC, FIRST)
    elif body.get("metadata", {}).get("generation") != (body.get("status") or {}).get("observedGeneration"):
        # A new generation not passed yet. Our own status patches (observedGeneration caught up), label and
        # annotation edits, and a re-listing of the watch queue nothing: decide reads only spec and status.
        runtime.submit(namespace, name, SPEC, REFRESH)


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_SELECTOR)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=CHILD_SELECTOR)
@kopf.on.event("", "v1", "pods", labels=CHILD_SELECTOR)
@kopf.on.event("batch", "v1", "jobs", labels=CHILD_SELECTOR)
async def child_changed(body: kopf.Body, namespace: str, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Children report back: Deployment rollout, HPA state, pod scheduling and build Jobs all feed status.
    Their passes go ahead of first passes, so a burst of creates does not hold back the status of the rest."""
    meta = body.get("metadata", {})
    owner = (meta.get("annotations") or {}).get(ANNOTATION_MD)
    seen = _CHILD_VERSIONS.pop(meta.get("uid"), None) if type == "DELETED" else _CHILD_VERSIONS.get(meta.get("uid"))
    if type != "DELETED":
        _CHILD_VERSIONS[meta.get("uid")] = meta.get("resourceVersion")
    if body.get("kind") == Deployments.KIND:  # a pass reads it from here instead of a GET
        if type == "DELETED":
            memo.runtime.deployments.gone(namespace, meta.get("name"))
        else:
            memo.runtime.deployments.saw(dict(body))
    # A listing (type None) at start: the ModelDeployments' own listing covers it. A listing later is a re-list
    # after "410 Gone" (a kube-apiserver restart): a child that changed meanwhile (a Job finished, pods turned
    # Ready) shows only there, so one whose version moved since this process saw it counts as an event.
    if not owner or (type is None and seen in (None, meta.get("resourceVersion"))):
        return
    if type == "ADDED" and not _reported(body):
        return
    memo.runtime.submit(namespace, owner, CHILD, REFRESH)


# What the API server itself sets on a new pod: not yet a report from any controller.
_SET_AT_CREATE = {"phase", "qosClass"}


def _reported(body: kopf.Body) -> bool:
    """Whether a child's controller has reported on it yet. A child just created (by our own pass, or by
    its ReplicaSet) with no status says nothing the pass that made it does not know; its first status
    write (scheduled, replicas counted, Job started) is the news, and starts a pass."""
    return bool(set((body.get("status") or {}).keys()) - _SET_AT_CREATE)


# uid -> resourceVersion of every child this process has seen (one short entry per child; dropped on delete).
_CHILD_VERSIONS: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class Election:
    """--leader-elect: the Lease that elects the one active replica (runtime/leader.py)."""
    namespace: str
    name: str
    identity: str


def run_operator(namespaces: list[str], health_address: str, metrics_address: str,
                 drift_interval: float, election: Election | None = None) -> int:
    kube = Kube.from_kubeconfig()
    runtime = Runtime(kube, _emitter(kube))
    stop = threading.Event()
    host, _, port = metrics_address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
    health_host, _, health_port = health_address.rpartition(":")
    leader = None
    if election:
        # Its own client: renewals never wait behind the handlers' requests for a connection.
        leader = LeaderElection(Kube.from_kubeconfig(), election.namespace, election.name, election.identity)
        with standby_health(health_host, int(health_port)):
            leader.acquire(stop)
        kube.may_write = leader.holding
        # Exit rather than go on unsure: the pod restarts as a standby, and no two replicas ever act.
        leader.keep_renewing(on_lost=lambda: os._exit(1), stop=stop)
    metrics.LEADER.set(1)
    threading.Thread(target=drift_loop, name="drift", daemon=True,
                     args=(runtime, namespaces, drift_interval, stop)).start()
    kopf.configure(verbose=False)
    # kopf logs every handler run at INFO (thousands of lines under load); we log transitions instead.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        asyncio.run(kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=f"http://{health_host or '0.0.0.0'}:{health_port}/healthz",
            # One replica runs kopf at a time (the Lease decides): no kopf peering.
            standalone=True,
            memo=kopf.Memo(runtime=runtime),
        ))
    finally:
        stop.set()
        if leader:
            leader.release()
        metrics.LEADER.set(0)
    return 0
