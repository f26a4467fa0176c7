"""Spec checks the operator makes beyond what the CRD schema and CEL already enforce."""

from __future__ import annotations

from typing import Any

import pydantic

from .api.spec import ModelDeploymentSpec
from .schedules import zone


class InvalidSpec(ValueError):
    """The spec cannot be served as written; the user must change it."""


def _describe(err: pydantic.ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = "spec." + ".".join(str(p) for p in e["loc"]) if e["loc"] else "spec"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def parse_spec(raw: Any) -> ModelDeploymentSpec:
    if not isinstance(raw, dict):
        raise InvalidSpec("spec is missing")
    try:
        spec = ModelDeploymentSpec.model_validate(raw)
    except pydantic.ValidationError as err:
        raise InvalidSpec(_describe(err)) from None
    check_semantics(spec)
    return spec


def check_semantics(spec: ModelDeploymentSpec) -> None:
    """Rules that span fields the CEL rules cannot see together, or that are cheaper to state here."""
    batching = spec.serving.dynamic_batching
    too_big = [b for b in batching.preferred_batch_sizes if b > spec.model.max_batch_size]
    if too_big:
        raise InvalidSpec(f"spec.serving.dynamicBatching.preferredBatchSizes {too_big} exceed "
                          f"spec.model.maxBatchSize {spec.model.max_batch_size}")
    for schedule in spec.autoscaling.schedules if spec.autoscaling else []:
        try:
            zone(schedule.timezone)
        except ValueError as err:
            raise InvalidSpec(f"spec.autoscaling.schedules[{schedule.name}].timezone: {err}") from None
    names = [t.name for t in (*spec.model.inputs, *spec.model.outputs)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidSpec(f"spec.model inputs/outputs repeat tensor names {duplicates}")
