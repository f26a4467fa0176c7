"""Pure rendering: a ModelDeployment in, its desired children out. No I/O here."""

from __future__ import annotations

from typing import Any

from ..api.spec import ModelDeploymentSpec
from . import names
from .autoscaler import render_hpa
from ..build.identity import build_hash
from .build_job import artifact_uri, render_build_job
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


def serving_spec(spec: ModelDeploymentSpec, build_hash: str | None) -> ModelDeploymentSpec:
    """The spec as served: with spec.build, the model comes from the artifact of a passed build."""
    if spec.build is None:
        return spec
    if build_hash is None:
        raise ValueError("a ModelDeployment with spec.build is rendered only for a build that passed")
    model = spec.model.model_copy(update={"uri": artifact_uri(spec, build_hash),
                                          "credentials_secret": spec.build.artifacts.credentials_secret})
    return spec.model_copy(update={"model": model})


def render_children(owner: Owner, spec: ModelDeploymentSpec, build_hash: str | None = None) -> list[dict[str, Any]]:
    """The serving children. `build_hash` names the passed build to serve when spec.build is set."""
    spec = serving_spec(spec, build_hash)
    config = render_config_pbtxt(spec)
    children = [
        render_config_map(owner, config),
        render_service(owner),
        render_deployment(owner, spec, config_hash(config), build_hash if spec.build else None),
        render_pdb(owner),
    ]
    if spec.autoscaling is not None:
        children.append(render_hpa(owner, spec.autoscaling))
    return children


def render_all(owner: Owner, spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """Everything a spec leads to, offline: the build Job (if any), then the children that serve its
    artifact once the build has passed. The operator applies the two parts at different times."""
    if spec.build is None:
        return render_children(owner, spec)
    bhash = build_hash(spec)
    return [render_build_job(owner, spec, bhash), *render_children(owner, spec, bhash)]
