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


def spec_or_reason(raw: Any) -> ModelDeploymentSpec | InvalidSpec:
    """parse_spec, with an invalid spec returned as its reason instead of raised (what decide takes)."""
    try:
        return parse_spec(raw)
    except InvalidSpec as err:
        return err


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


# The CEL rules of spec.autoscaling (api/spec.py), each rule's text -> the same test. The API server
# enforces them at `kubectl apply`; a file given to `peakserve plan` never meets it. Messages and field
# paths are the CRD's own, read from the models; tests/unit/test_planner_cli.py checks every rule has its twin.
AUTOSCALING_RULES = {
    "self.minReplicas <= self.maxReplicas": lambda a: a.min_replicas <= a.max_replicas,
    "self.metric != 'gpuUtilization' || !has(self.target) || self.target <= 100":
        lambda a: a.metric != "gpuUtilization" or a.target is None or a.target <= 100,
    "!has(self.target) || !(self.metric in ['requestRate', 'concurrency'])":
        lambda a: a.target is None or a.metric not in ("requestRate", "concurrency"),
    "self.schedules.all(s, s.minReplicas <= self.maxReplicas)":
        lambda a: all(s.min_replicas <= a.max_replicas for s in a.schedules),
}
SCHEDULE_RULES = {
    # Strings compare as CEL compares them; LOCAL_TIME_PATTERN makes that the order in time.
    "self.end > self.start": lambda s: s.end > s.start,
}


def _check_cel(model: pydantic.BaseModel, rules: dict, where: str) -> None:
    for rule in type(model).model_config["json_schema_extra"]["x-kubernetes-validations"]:
        if not rules[rule["rule"]](model):
            raise InvalidSpec(f"{where}{rule.get('fieldPath', '')}: {rule['message']}")


def parse_autoscaling(raw: Any) -> AutoscalingSpec:
    """spec.autoscaling alone, refused where the API server (schema and CEL) or parse_spec would refuse it:
    what `peakserve plan -f` reads, without an API server in between."""
    try:
        autoscaling = AutoscalingSpec.model_validate(raw)
    except pydantic.ValidationError as err:
        raise InvalidSpec(_describe(err, "spec.autoscaling")) from None
    check_autoscaling(autoscaling)
    _check_cel(autoscaling, AUTOSCALING_RULES, "spec.autoscaling")
    names = [s.name for s in autoscaling.schedules]
    for i, schedule in enumerate(autoscaling.schedules):
        if schedule.name in names[:i]:  # a list-map keyed by name
            raise InvalidSpec(f"spec.autoscaling.schedules[{i}].name: duplicate value {schedule.name!r}")
        _check_cel(schedule, SCHEDULE_RULES, f"spec.autoscaling.schedules[{i}]")
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
