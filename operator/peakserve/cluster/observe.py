"""Observe: read what one reconcile pass needs, once, into a typed Snapshot. Reads only.

Which objects to read is decided by decide/snapshot.py (first the children, then the lists that
the children show to be needed); this module carries the reads out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any, Protocol

from .. import api
from ..decide.snapshot import DRIFT, ParsedSpec, Read, Snapshot, first_reads, promotion_reads, second_reads
from ..decide.snapshot import RangeResult, metrics_reads
from .client import ApiException, Kube
from .prometheus import query_range

KEDA = "keda.sh/v1alpha1"
GATEWAY = "gateway.networking.k8s.io/v1"


class Discovery:
    """Whether the cluster serves an API group/version, asked at most once per `ttl` seconds."""

    def __init__(self, kube: Kube, ttl: float = 60.0):
        self.kube, self.ttl = kube, ttl
        self._seen: dict[str, tuple[float, bool]] = {}

    def serves(self, group_version: str) -> bool:
        seen = self._seen.get(group_version)
        if seen and time.monotonic() - seen[0] < self.ttl:
            return seen[1]
        answer = self.kube.serves(group_version)
        self._seen[group_version] = (time.monotonic(), answer)
        return answer


def read_model_deployment(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The ModelDeployment as it is now (our own last status included), or None once it is going away."""
    body = kube.get(api.API_VERSION, api.KIND, namespace, name)
    return None if body is None or body["metadata"].get("deletionTimestamp") else body


class Held(Protocol):
    """Bodies this process holds of one kind of child (runtime/bodies.Deployments): read instead of a GET."""

    KIND: str

    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def saw(self, body: dict[str, Any]) -> None: ...

    def gone(self, namespace: str, name: str) -> None: ...


def _read(kube: Kube, namespace: str, read: Read, held: Held | None, fresh: bool) -> Any:
    scope = None if read.cluster else namespace
    if read.name is None:
        return tuple(kube.list(read.api_version, read.kind, scope, read.selector or "", read.field_selector or ""))
    if held is None or read.kind != held.KIND:
        return kube.get(read.api_version, read.kind, scope, read.name)
    body = None if fresh else held.get(namespace, read.name)
    if body is None:
        body = kube.get(read.api_version, read.kind, scope, read.name)
        if body is not None:
            held.saw(body)
        else:
            held.gone(namespace, read.name)
    return body


def observe(kube: Kube, body: dict[str, Any], spec: ParsedSpec, cause: str, discovery: Discovery,
            now: dt.datetime | None = None, held: Held | None = None,
            applied_generation: int | None = None) -> Snapshot:
    """`held`: children this process holds the latest bodies of, read instead of a GET; except on a drift pass,
    whose level-triggered check trusts no copy (it reads them all anew, and keeps what it read).
    `applied_generation`: what this process applied before any status says so (Snapshot); the reads depend on it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    snap = Snapshot(body=body, cause=cause, keda_served=discovery.serves(KEDA),
                    gateway_served=discovery.serves(GATEWAY), applied_generation=applied_generation)
    for reads in (first_reads, second_reads, lambda s, p: promotion_reads(s, p, now)):
        found = {}
        for read in reads(snap, spec):
            try:
                found[read.slot] = _read(kube, snap.namespace, read, held, fresh=cause == DRIFT)
            except ApiException as err:
                # A cluster-wide list refused (no ClusterRole for it): the slot stays unread, and PromotionReady
                # says it could not check rather than the whole pass failing.
                if not (read.cluster and err.status == 403):
                    raise
        snap = dataclasses.replace(snap, **found, read=snap.read | frozenset(found))
    # Prometheus, only for what is due (capacity learning, the predictive floor); failures come back as messages,
    # and after one the pass asks no more (an unreachable Prometheus costs one timeout, not one per query).
    answers: dict[str, RangeResult] = {}
    for read in metrics_reads(snap, spec, now):
        failed = next((a for a in answers.values() if a.error), None)
        answers[read.slot] = failed or query_range(read)
    if answers:
        snap = dataclasses.replace(snap, metrics=answers, read=snap.read | {"metrics"})
    return snap
