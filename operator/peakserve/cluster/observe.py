"""Observe: read what one reconcile pass needs, once, into a typed Snapshot. Reads only.

Which objects to read is decided by decide/snapshot.py (first the children, then the lists that
the children show to be needed); this module carries the reads out.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from .. import api
from ..decide.snapshot import ParsedSpec, Read, Snapshot, first_reads, second_reads
from .client import Kube

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


def _read(kube: Kube, namespace: str, read: Read) -> Any:
    if read.name is not None:
        return kube.get(read.api_version, read.kind, namespace, read.name)
    return tuple(kube.list(read.api_version, read.kind, namespace, read.selector or ""))


def observe(kube: Kube, body: dict[str, Any], spec: ParsedSpec, cause: str, discovery: Discovery) -> Snapshot:
    snap = Snapshot(body=body, cause=cause, keda_served=discovery.serves(KEDA),
                    gateway_served=discovery.serves(GATEWAY))
    for reads in (first_reads, second_reads):
        found = {read.slot: _read(kube, snap.namespace, read) for read in reads(snap, spec)}
        snap = dataclasses.replace(snap, **found, read=snap.read | frozenset(found))
    return snap
