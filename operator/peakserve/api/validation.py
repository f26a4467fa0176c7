"""Spec checks the operator makes beyond what the CRD schema and CEL already enforce."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydantic

from .spec import AutoscalingSpec, ModelDeploymentSpec
from .schedules import zone


class InvalidSpec(ValueError):
    """The spec cannot be served as written; the user must change it."""


def _describe(err: pydantic.ValidationError, root: str = "spec") -> str:
    parts = []
    for e in err.errors():
        where = root + "." + ".".join(str(p) for p in e["loc"]) if e["loc"] else root
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
    if spec.autoscaling:
        check_autoscaling(spec.autoscaling)
    names = [t.name for t in (*spec.model.inputs, *spec.model.outputs)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidSpec(f"spec.model inputs/outputs repeat tensor names {duplicates}")


def parse_autoscaling(raw: Any) -> AutoscalingSpec:
    """spec.autoscaling alone, refused as parse_spec would refuse it (`peakserve plan -f` reads no more)."""
    try:
        autoscaling = AutoscalingSpec.model_validate(raw)
    except pydantic.ValidationError as err:
        raise InvalidSpec(_describe(err, "spec.autoscaling")) from None
    check_autoscaling(autoscaling)
    return autoscaling


def check_autoscaling(autoscaling: AutoscalingSpec) -> None:
    """The rules of check_semantics that concern spec.autoscaling alone."""
    for schedule in autoscaling.schedules:
        try:
            zone(schedule.timezone)
        except ValueError as err:
            raise InvalidSpec(f"spec.autoscaling.schedules[{schedule.name}].timezone: {err}") from None
        for field, value in (("start", schedule.start), ("end", schedule.end)):
            try:  # the schema's pattern admits dates that do not exist, such as 2026-11-31
                dt.datetime.fromisoformat(value)
            except ValueError as err:
                raise InvalidSpec(f"spec.autoscaling.schedules[{schedule.name}].{field}: {value!r} is not a "
                                  f"date and time: {err}") from None
