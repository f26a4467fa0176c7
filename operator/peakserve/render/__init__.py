"""Pure rendering: a ModelDeployment in, its desired children out. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.spec import ModelDeploymentSpec
from . import names
from .autoscaler import render_hpa
from .headroom import headroom_name, render_headroom
from .keda import render_scaled_object
from ..api.identity import build_hash
from ..api.schedules import DEFAULT_LEAD_SECONDS, lead_time
from .build_job import artifact_uri, render_build_job
from .deployment import render_canary, render_deployment
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
    "ScaledObject": "keda.sh/v1alpha1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}



@dataclass(frozen=True)
class ScalingPlan:
    """What the clock and the cluster decide for an autoscaled spec: computed by the operator, so the
    rendering itself stays pure."""

    engine: str = "hpa"            # hpa | keda
    floor: int | None = None       # minReplicas in force now; None: the spec's
    lead_seconds: int = DEFAULT_LEAD_SECONDS
    metric: str | None = None      # the metric in force (capacity known or not); None: from the spec alone
    target: float | None = None    # its per-pod target, in the metric's unit (see autoscaler.signal)
    predictive_floor: int | None = None  # KEDA's minReplicaCount (its cron triggers carry the schedules' floors)


def possible_children(md_name: str) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of every child a ModelDeployment may have, for pruning."""
    child = names.child_name(md_name)
    out = [(v, k, names.config_map_name(md_name) if k == "ConfigMap" else child) for k, v in CHILD_KINDS.items()]
    return out + [("apps/v1", "Deployment", headroom_name(md_name))] + [
        ("v1", "Service", names.track_service_name(md_name, track)) for track in (names.STABLE, names.CANARY)]


def render_config_map(owner: Owner, config: str, name: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": owner.metadata(name or names.config_map_name(owner.name)),
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


def render_children(owner: Owner, spec: ModelDeploymentSpec, build_hash: str | None = None,
                    scaling: ScalingPlan = ScalingPlan()) -> list[dict[str, Any]]:
    """The serving children. `build_hash` names the passed build to serve when spec.build is set."""
    spec = serving_spec(spec, build_hash)
    config = render_config_pbtxt(spec)
    children = [
        render_config_map(owner, config),
        render_service(owner),
        render_deployment(owner, spec, config_hash(config), build_hash if spec.build else None),
        render_pdb(owner),
    ]
    return children + render_scaling(owner, spec, scaling)


def render_scaling(owner: Owner, spec: ModelDeploymentSpec, scaling: ScalingPlan) -> list[dict[str, Any]]:
    """The autoscaler (HPA or ScaledObject) and the GPU headroom: none without spec.autoscaling."""
    autoscaling = spec.autoscaling
    if autoscaling is None:
        return []
    if scaling.engine == "keda":
        children = [render_scaled_object(owner, autoscaling, scaling.lead_seconds, scaling.metric, scaling.target,
                                         scaling.predictive_floor)]
    else:
        children = [render_hpa(owner, autoscaling, scaling.floor, scaling.metric, scaling.target)]
    if autoscaling.headroom is not None:
        children.append(render_headroom(owner, spec))
    return children


def render_canary_children(owner: Owner, spec: ModelDeploymentSpec, build_hash: str | None,
                           replicas: int) -> list[dict[str, Any]]:
    """The canary's ConfigMap and Deployment: the spec's new pod template, `replicas` pods of it."""
    spec = serving_spec(spec, build_hash)
    config = render_config_pbtxt(spec)
    return [render_config_map(owner, config, names.canary_config_map_name(owner.name)),
            render_canary(owner, spec, config_hash(config), build_hash if spec.build else None, replicas)]


def offline_plan(spec: ModelDeploymentSpec) -> ScalingPlan:
    """Without a cluster or a clock: the named engine (auto renders an HPA), the spec's own floor, and
    the spec's lead time (or the default until one is measured)."""
    if spec.autoscaling is None:
        return ScalingPlan()
    engine = "keda" if spec.autoscaling.engine == "keda" else "hpa"
    return ScalingPlan(engine=engine, lead_seconds=lead_time(spec.autoscaling, None))


def render_all(owner: Owner, spec: ModelDeploymentSpec, scaling: ScalingPlan | None = None) -> list[dict[str, Any]]:
    """Everything a spec leads to, offline: the build Job (if any), then the children that serve its
    artifact once the build has passed. The operator applies the two parts at different times."""
    scaling = scaling or offline_plan(spec)
    if spec.build is None:
        return render_children(owner, spec, scaling=scaling)
    bhash = build_hash(spec)
    return [render_build_job(owner, spec, bhash), *render_children(owner, spec, bhash, scaling)]
