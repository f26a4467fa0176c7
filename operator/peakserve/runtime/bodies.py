"""The latest body of each ModelDeployment, as its watch delivered it or as our own status write returned it;
and of each Deployment we own, as its watch delivered it or as our own apply returned it.

A pass starts from the object as it is now. Reading it with a GET cost one request per pass, the largest
share of the operator's requests after its children's; the watch delivers the same body anyway. Kept as
compact JSON (a few KiB each, about a tenth of the decoded dicts); a ModelDeployment's without managedFields,
which no pass reads, a Deployment's with peakserve's own entry only (it says who owns the replicas). A drift
pass still reads from the API server (runtime.py), so a lost watch event leaves a stale copy for one drift
interval at most.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..render.names import MANAGER


def _version(body: dict[str, Any]) -> int | None:
    """resourceVersion as a number, where it is one (etcd's revision). The API conventions call it opaque;
    it is compared only to keep a late watch event from replacing the newer body our own write returned,
    and a version that is not a number is simply taken as newer."""
    version = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(version) if version.isdigit() else None


class LatestBodies:
    """`managers`: whose managedFields entries to keep (none by default)."""

    def __init__(self, managers: frozenset[str] = frozenset()) -> None:
        self._managers = managers
        self._lock = threading.Lock()
        self._bodies: dict[str, tuple[int | None, str]] = {}

    def put(self, key: str, body: dict[str, Any]) -> None:
        version = _version(body)
        if not self._newer(key, version):  # the watch event of our own write, or a late one: nothing new
            return
        meta = dict(body.get("metadata") or {})
        kept = [e for e in meta.pop("managedFields", None) or [] if e.get("manager") in self._managers]
        if kept:
            meta["managedFields"] = kept
        text = json.dumps({**body, "metadata": meta}, separators=(",", ":"))
        with self._lock:
            if self._newer(key, version):
                self._bodies[key] = (version, text)

    def _newer(self, key: str, version: int | None) -> bool:
        held = self._bodies.get(key)
        return not (held and held[0] is not None and version is not None and version <= held[0])

    def get(self, key: str) -> dict[str, Any] | None:
        """A fresh copy (a pass may change what it holds), or None when none is held."""
        with self._lock:
            held = self._bodies.get(key)
        return json.loads(held[1]) if held else None

    def forget(self, key: str) -> None:
        with self._lock:
            self._bodies.pop(key, None)

    def __len__(self) -> int:
        return len(self._bodies)


class Deployments:
    """Our Deployments' latest bodies (the Triton, canary and headroom ones), by namespace and name. A pass
    reads a Deployment from here when one is held, and from the API server otherwise (then keeps its answer).
    Our own apply's answer is put here too, so a pass never sees a Deployment older than one it wrote."""

    KIND = "Deployment"

    def __init__(self) -> None:
        self._bodies = LatestBodies(managers=frozenset({MANAGER}))

    def saw(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        self._bodies.put(f"{meta.get('namespace')}/{meta.get('name')}", body)

    def gone(self, namespace: str, name: str) -> None:
        self._bodies.forget(f"{namespace}/{name}")

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._bodies.get(f"{namespace}/{name}")

    def __len__(self) -> int:
        return len(self._bodies)
