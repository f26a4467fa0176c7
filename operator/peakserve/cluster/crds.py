"""`peakserve crds apply`: upgrade the CRD in place. Helm installs crds/ once and never upgrades it."""

from __future__ import annotations

import time

from .. import api
from ..api.crd import build_crd
from .client import Kube

FIELD_MANAGER = "peakserve-crds"


def apply_crds(kube: Kube, timeout: float = 60) -> str:
    """Server-side apply the CRD this version of peakserve was built with; wait until it is Established."""
    crd = build_crd()
    name = crd["metadata"]["name"]
    kube.apply(crd, manager=FIELD_MANAGER)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = kube.get(crd["apiVersion"], crd["kind"], None, name) or {}
        conditions = {c["type"]: c["status"] for c in live.get("status", {}).get("conditions", [])}
        if conditions.get("Established") == "True" and live["metadata"].get("generation") == \
                live.get("status", {}).get("observedGeneration", live["metadata"].get("generation")):
            return f"{name} applied ({api.VERSION}), Established"
        time.sleep(0.5)
    raise TimeoutError(f"{name} not Established after {timeout}s")
