"""The CRD generated from the spec models: committed copy is current, and the schema is one the
API server accepts as structural (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/
custom-resource-definitions/#specifying-a-structural-schema)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from peakserve.api.crd import build_crd, render_crd_yaml

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "peakserve.io_modeldeployments.yaml"


@pytest.fixture(scope="module")
def version() -> dict[str, Any]:
    crd = build_crd()
    (only,) = crd["spec"]["versions"]
    return only


@pytest.fixture(scope="module")
def root(version) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every dict in the schema with its path (list items and map values included)."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key in ("default", "enum", "x-kubernetes-validations", "example"):
                continue  # values, not schemas
            yield from walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from walk(item, f"{path}[{i}]")


def properties(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, schema) of every declared property below schema, through arrays and maps."""
    for name, prop in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        yield here, prop
        yield from properties(prop, here)
        if isinstance(prop.get("items"), dict):
            yield from properties(prop["items"], here + "[]")
        if isinstance(prop.get("additionalProperties"), dict):
            yield from properties(prop["additionalProperties"], here + "{}")


def test_committed_crd_is_current():
    assert CRD_FILE.read_text() == render_crd_yaml(), (
        f"{CRD_FILE.name} is stale: the spec models changed. Run `make crds` and commit the result.")


def test_crd_yaml_round_trips():
    # What kubectl reads from the file is exactly the CRD the code builds (no lossy YAML quoting).
    assert yaml.safe_load(render_crd_yaml()) == build_crd()


def test_no_refs_or_unions(root):
    for path, node in walk(root):
        assert "$ref" not in node, f"{path}: $ref is not allowed in a structural schema"
        assert "$defs" not in node, path
        if "anyOf" in node or "oneOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: union outside int-or-string"


def test_no_additional_properties_false(root):
    # Structural schemas prune unknown fields; additionalProperties: false is rejected alongside properties.
    for path, node in walk(root):
        assert node.get("additionalProperties") is not False, path


def test_every_property_has_a_type(root):
    untyped = [path for path, prop in properties(root, "")
               if "type" not in prop
               and not prop.get("x-kubernetes-int-or-string")
               and not prop.get("x-kubernetes-preserve-unknown-fields")]
    assert not untyped, f"properties without a type: {untyped}"


def test_int_or_string_fields_have_no_type(root):
    # The API server refuses `type` next to x-kubernetes-int-or-string.
    for path, node in walk(root):
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path


def test_objects_and_arrays_declare_their_shape(root):
    for path, prop in properties(root, ""):
        if prop.get("type") == "array":
            assert isinstance(prop.get("items"), dict), f"{path}: array without items"
        if prop.get("type") == "object" and path not in (".metadata",):
            assert ("properties" in prop or "additionalProperties" in prop
                    or prop.get("x-kubernetes-preserve-unknown-fields")), f"{path}: object of unknown shape"


def test_spec_is_required(root):
    assert root["required"] == ["spec"]


def test_rollout_int_or_percent_fields(root):
    rollout = root["properties"]["spec"]["properties"]["serving"]["properties"]["rollout"]["properties"]
    for field in ("maxSurge", "maxUnavailable"):
        assert rollout[field].get("x-kubernetes-int-or-string") is True, field


def test_printer_columns(version):
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Replicas", "Precision", "Model", "Age"} <= set(columns)
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Model"]["jsonPath"] == ".spec.model.name"
    assert columns["Precision"]["jsonPath"] == ".status.precision"
    assert columns["Age"]["type"] == "date"
    # Columns shown by default (priority 0) keep `kubectl get mdep` narrow.
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "Ready", "Replicas", "Precision", "Model", "Age"]


def test_printer_column_paths_exist_in_schema(root, version):
    for column in version["additionalPrinterColumns"]:
        json_path = column["jsonPath"]
        if json_path.startswith(".metadata"):
            continue
        node = root
        for part in re.sub(r"\[\?\(.*?\)\]", "", json_path).strip(".").split("."):
            node = node["properties"][part]
            if node.get("type") == "array":
                node = node["items"]
        assert node["type"] == column["type"], json_path


def test_names_and_subresources():
    crd = build_crd()
    assert crd["spec"]["names"]["shortNames"] == ["mdep"]
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert version["served"] and version["storage"]


def test_every_spec_field_is_described(root):
    spec = root["properties"]["spec"]
    missing = [path for path, prop in properties(spec, ".spec") if not prop.get("description")]
    assert not missing, f"spec fields without a description (kubectl explain shows nothing): {missing}"


def test_nested_defaults_are_spelled_out(root):
    # The API server only fills a nested default when the parent object is present; full object
    # defaults make `serving: {}` (or no serving at all) come back fully populated.
    serving = root["properties"]["spec"]["properties"]["serving"]
    assert serving["default"]["gpus"] == 1
    assert serving["default"]["rollout"] == {"abort": False, "force": False, "paused": False, "routeParents": [],
                                             "steps": []}
    assert serving["default"]["instanceGroups"] == [{"kind": "GPU", "count": 1}]
