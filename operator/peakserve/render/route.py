"""Exact traffic weights where the cluster serves the Gateway API: an HTTPRoute over two track Services.

Without a mesh or a gateway, stable and canary share the one Service in proportion to their pod counts.
With `gateway.networking.k8s.io`, clients that go through a Gateway get the step's weight exactly.
"""

from __future__ import annotations

from typing import Any

from ..api.spec import ModelDeploymentSpec
from . import names
from .deployment import HTTP_PORT
from .owner import Owner

GATEWAY_API = "gateway.networking.k8s.io/v1"


def _track_service(owner: Owner, track: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": owner.metadata(names.track_service_name(owner.name, track)),
        "spec": {"type": "ClusterIP", "selector": names.track_labels(owner.name, track),
                 "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]},
    }


def render_route(owner: Owner, spec: ModelDeploymentSpec, canary_weight: int) -> list[dict[str, Any]]:
    """The stable and canary Services and the HTTPRoute that splits between them (canary_weight percent)."""
    backends = [{"name": names.track_service_name(owner.name, names.STABLE), "port": HTTP_PORT,
                 "weight": 100 - canary_weight}]
    if canary_weight:
        backends.append({"name": names.track_service_name(owner.name, names.CANARY), "port": HTTP_PORT,
                         "weight": canary_weight})
    parents = [p.model_dump(by_alias=True, exclude_none=True) for p in spec.serving.rollout.route_parents]
    route = {
        "apiVersion": GATEWAY_API, "kind": "HTTPRoute",
        "metadata": owner.metadata(names.child_name(owner.name)),
        "spec": {"parentRefs": parents, "rules": [{"backendRefs": backends}]},
    }
    return [_track_service(owner, names.STABLE), _track_service(owner, names.CANARY), route]
