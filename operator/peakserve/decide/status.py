"""status of a ModelDeployment, derived in one place from what one pass observed and decided. Pure.

Most of status is a fresh observation. Some fields are memory, because what they report cannot be
seen again on a later pass; each says so where it is set:
- status.build while the spec is invalid: an invalid spec says nothing new about the last build;
- status.autoscaling while the spec is invalid: likewise for the floor last set;
- status.precision while a newer build runs or failed: the pods still serve the last passed build;
- status.autoscaling.measuredStartupSeconds: the longest start ever seen (decide/scaling.py);
- status.autoscaling.capacity: the highest capacity ever learned (decide/capacity_target.py);
- status.autoscaling.predictive: the last forecast, until the next one or until stale (decide/predictive.py);
- status.rollout: the canary's step, when it started and the analyses' verdicts (decide/rollout.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..api.spec import ModelDeploymentSpec, ModelDeploymentStatus, RolloutStatus
from ..api.timestamps import rfc3339
from ..render.owner import Owner
from ..render.service import endpoint
from . import conditions
from .build_job import BuildState
from .plan import status_dict
from .scaling import ScalingDecision


def _served_precision(spec: ModelDeploymentSpec | None, build: BuildState | None, serving_hash: str | None,
                      previous: dict[str, Any]) -> str | None:
    """What the pods serve: the passed build's choice, or the precision the spec declares for a
    ready-made model. Memory: while a newer build runs or has failed, the last passed one serves."""
    if spec is None:
        return previous.get("precision")
    if spec.build is None:
        return spec.model.precision
    if build is not None and build.passed and serving_hash == build.hash:
        return build.result.get("precision")
    return previous.get("precision")


def derive_status(obs: conditions.Observed, owner: Owner, spec: ModelDeploymentSpec | None,
                  build: BuildState | None, scaling: ScalingDecision | None, serving_hash: str | None,
                  previous: dict[str, Any], now: dt.datetime,
                  rollout: RolloutStatus | None = None) -> ModelDeploymentStatus:
    """`spec` None: the spec is invalid (obs.invalid says why). `rollout` None: this pass did not decide
    the rollout (invalid spec, build pending, a child event that only reports)."""
    dep_status = (obs.deployment or {}).get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "conditions": conditions.derive_conditions(obs, previous.get("conditions") or [], rfc3339(now)),
        "replicas": int(dep_status.get("replicas") or 0),
        "readyReplicas": int(dep_status.get("readyReplicas") or 0),
        "updatedReplicas": int(dep_status.get("updatedReplicas") or 0),
        "endpoint": endpoint(owner),
        "precision": _served_precision(spec, build, serving_hash, previous),
    }
    if obs.build is not None:  # status.build of this pass, as the conditions saw it
        status["build"] = obs.build
    elif spec is None and previous.get("build"):  # memory: see the module docstring
        status["build"] = previous["build"]
    if scaling is not None:
        status["autoscaling"] = status_dict(scaling.status)
    elif spec is None and previous.get("autoscaling"):  # memory: see the module docstring
        status["autoscaling"] = previous["autoscaling"]
    # memory: a rollout's step, its start and its verdicts are seen nowhere else (decide/rollout.py)
    status["rollout"] = status_dict(rollout) if rollout is not None else previous.get("rollout")
    return ModelDeploymentStatus.model_validate({k: v for k, v in status.items() if v is not None})


def same_status(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for lastTransitionTime, which moves only with a transition anyway."""
    strip = lambda s: {**s, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                           for c in s.get("conditions") or []]}
    return strip(a) == strip(b)


def merge_patch(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from previous to current: fields that went away are sent as null, because
    a merge patch leaves absent fields as they were (a stale activeSchedule would stay forever)."""
    patch: dict[str, Any] = {key: None for key in previous if key not in current}
    for key, value in current.items():
        old = previous.get(key)
        patch[key] = merge_patch(old, value) if isinstance(value, dict) and isinstance(old, dict) else value
    return patch
