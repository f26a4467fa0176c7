"""The Service clients and Prometheus reach Triton through."""

from __future__ import annotations

from typing import Any

from . import names
from .deployment import GRPC_PORT, HTTP_PORT, METRICS_PORT
from .owner import Owner


def render_service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(names.child_name(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(owner.name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                 "appProtocol": "kubernetes.io/h2c"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def endpoint(owner: Owner) -> dict[str, str]:
    host = f"{names.child_name(owner.name)}.{owner.namespace}.svc"
    return {"http": f"http://{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}"}
