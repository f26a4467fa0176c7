"""The latest body of each ModelDeployment, as its watch delivered it or as our own status write returned it.

A pass starts from the object as it is now. Reading it with a GET cost one request per pass, the largest
share of the operator's requests after its children's; the watch delivers the same body anyway. Kept as
compact JSON (a few KiB each, about a tenth of the decoded dicts), without managedFields, which no pass
reads. A drift pass still reads from the API server (runtime.py), so a lost watch event leaves a stale
copy for one drift interval at most.
"""

from __future__ import annotations

import json
import threading
from typing import Any


def _version(body: dict[str, Any]) -> int | None:
    """resourceVersion as a number, where it is one (etcd's revision). The API conventions call it opaque;
    it is compared only to keep a late watch event from replacing the newer body our own write returned,
    and a version that is not a number is simply taken as newer."""
    version = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(version) if version.isdigit() else None


class LatestBodies:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[str, tuple[int | None, str]] = {}

    def put(self, key: str, body: dict[str, Any]) -> None:
        version = _version(body)
        meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
        text = json.dumps({**body, "metadata": meta}, separators=(",", ":"))
        with self._lock:
            held = self._bodies.get(key)
            if held and held[0] is not None and version is not None and version < held[0]:
                return
            self._bodies[key] = (version, text)

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
