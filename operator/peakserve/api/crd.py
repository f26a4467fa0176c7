"""Generate the ModelDeployment CRD from the spec models.

pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema. This module
inlines $refs, folds Optional[X] into X, turns int|str into x-kubernetes-int-or-string,
and writes object defaults so the API server fills nested defaults itself.
"""

from __future__ import annotations

import copy
import typing
from typing import Any

from pydantic import BaseModel

from . import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from ..yamlio import dump
from .spec import ModelDeploymentSpec, ModelDeploymentStatus

DROP_KEYS = {"title", "$defs"}


def _default_for(default: Any) -> Any:
    if isinstance(default, BaseModel):
        # Spelled out in full, not {}: the API server checks CEL rules against defaults too.
        return default.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(default, list):
        return [_default_for(d) for d in default]
    if hasattr(default, "value"):  # Enum
        return default.value
    return default


def _model_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Alias -> default for each field with a non-None default (factories included)."""
    defaults = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            continue
        value = info.get_default(call_default_factory=True)
        if value is None:
            continue
        defaults[info.alias or name] = _default_for(value)
    return defaults


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    node = dict(node)
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        types = {v.get("type") for v in variants}
        if types == {"integer", "string"}:
            node["x-kubernetes-int-or-string"] = True
        elif len(variants) == 1:
            node = {**_structural(variants[0], defs), **node}
        else:
            raise ValueError(f"cannot express union in a structural schema: {variants}")
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
        node["type"] = "object"
    if node.get("additionalProperties") is False:  # structural schemas prune unknown fields instead
        node.pop("additionalProperties")
    if node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        # JSON Schema 2020 (pydantic) writes the bound in exclusiveMinimum; OpenAPI v3 wants a flag.
        if isinstance(node.get(exclusive), (int, float)) and not isinstance(node[exclusive], bool):
            node[bound], node[exclusive] = node[exclusive], True
    literal = {"default", "enum", "required", "x-kubernetes-validations", "x-kubernetes-list-map-keys"}
    out = {}
    for key, value in node.items():
        if key in DROP_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":  # a map of field names, not a schema: recurse into each value
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        else:
            out[key] = value if key in literal else _structural(value, defs)
    return out


def _apply_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """pydantic leaves default_factory out of JSON Schema; put every default back, recursively."""
    for alias, default in _model_defaults(model).items():
        schema["properties"][alias]["default"] = default
    for name, info in model.model_fields.items():
        sub = _submodel(info.annotation)
        if sub is None:
            continue
        prop = schema["properties"][info.alias or name]
        target = prop["items"] if prop.get("type") == "array" else prop
        _apply_defaults(target, sub)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found:
            return found
    return None


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    # A deep copy: pydantic hands out cached pieces (json_schema_extra dicts), which must not be mutated.
    raw = copy.deepcopy(model.model_json_schema(by_alias=True, mode="validation"))
    schema = _structural(raw, raw.get("$defs", {}))
    _apply_defaults(schema, model)
    return schema


PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
     "priority": 1},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas",
     "description": "Ready Triton pods"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.replicas", "priority": 1},
    {"name": "Promotion", "type": "string", "jsonPath": '.status.conditions[?(@.type=="PromotionReady")].status',
     "priority": 1, "description": "PromotionReady: the next promotion's floor fits the free GPUs"},
    {"name": "Precision", "type": "string", "jsonPath": ".status.precision",
     "description": "Precision being served (a build's choice)"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    spec_schema = schema_for(ModelDeploymentSpec)
    status_schema = schema_for(ModelDeploymentStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": SINGULAR, "shortNames": SHORT_NAMES, "categories": ["peakserve"]},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "ModelDeployment serves one model on NVIDIA Triton Inference Server "
                                   "on GPU nodes, with autoscaling and safe rollouts.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


def render_crd_yaml() -> str:
    header = "# Generated by `peakserve crd` from operator/peakserve/api/spec.py. Do not edit.\n"
    return header + dump(build_crd())
