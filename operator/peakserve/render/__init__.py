"""Pure rendering: a ModelDeployment in, its desired children out. No I/O here."""

from __future__ import annotations

from typing import Any

from ..api.spec import ModelDeploymentSpec
from . import names
from .autoscaler import render_hpa
from .deployment import render_deployment
from .disruption import render_pdb
from .owner import Owner
from .service import render_service
from .triton_config import config_hash, render_config_pbtxt

# Kinds peakserve may create, with their apiVersion, in apply order: config before the pods that mount it.
CHILD_KINDS = {
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
}


def render_config_map(owner: Owner, config: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": owner.metadata(names.config_map_name(owner.name)),
            "data": {"config.pbtxt": config}}


def render_children(owner: Owner, spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    config = render_config_pbtxt(spec)
    children = [
        render_config_map(owner, config),
        render_service(owner),
        render_deployment(owner, spec, config_hash(config)),
        render_pdb(owner),
    ]
    if spec.autoscaling is not None:
        children.append(render_hpa(owner, spec.autoscaling))
    return children
