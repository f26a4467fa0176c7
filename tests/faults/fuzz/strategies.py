"""Hypothesis strategies for ModelDeployment specs, drawn from the CRD's own schema.

`crds/peakserve.io_modeldeployments.yaml` (generated from api/spec.py by `make crds`) is read at import, so
the strategies follow the schema as it changes: types, bounds, enums, patterns, list sizes, list-map keys,
int-or-string and free-form fields all come from it. Three kinds of case:

- valid: a spec the schema admits. Three in four are also made coherent (`cohere`: the cross-field CEL
  rules the schema's types cannot say, such as exactly one of model.uri and build) so that most reach the
  operator; the others meet the CEL rules as drawn.
- schema: a coherent-or-not valid spec with one schema violation at one place (`schema_mutation`): a wrong
  type, a number out of range or past int64, a bad enum value, a pattern mismatch, a string too long or
  empty, too many or no items, an unknown field, a required field left out. The API server must refuse
  it and name that place.
- triton: a coherent spec with one thing Triton refuses when it loads a model (`triton_mutation`): a
  dimension of 0 or below -1, no dimensions, a tensor name twice, an output named like an input, a bad
  name, preferred batch sizes above maxBatchSize or of 0, a batch size out of range, a GPU instance group
  without GPUs. Each names where it must be refused: at apply, or as InvalidSpec by the operator.

HINTS narrows a few counts (replicas, GPUs, schedule floors, headroom) to keep every accepted object to a
few pods on the 2-core test machine; the mutations still go past the schema's own bounds.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "peakserve.io_modeldeployments.yaml"
REGRESSIONS_PATH = Path(__file__).resolve().parent / "regressions.yaml"


def load_regressions(path: Path = REGRESSIONS_PATH) -> list[dict[str, Any]]:
    """The failing examples the fuzz runs found (regressions.yaml), each with its fix."""
    return yaml.safe_load(path.read_text()) or []


def load_spec_schema(path: Path = CRD_PATH) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


SPEC_SCHEMA = load_spec_schema()
MISSING = object()
LONGEST_LIST = 3       # lists and maps are drawn at most this much longer than their minimum
LONGEST_TEXT = 24      # free text (no pattern) is drawn at most this long


# --- paths --------------------------------------------------------------------------------------------

Path_ = tuple  # keys (str) and list indices (int) below spec


def k8s_path(path: Path_) -> str:
    """The API server's spelling: spec.model.inputs[0].dims[1]."""
    out = "spec"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def schema_key(path: Path_) -> str:
    """HINTS' spelling: list items and map values are `*` (model.inputs.*.dims)."""
    return ".".join("*" if isinstance(p, int) else p for p in path)


def get_at(obj: Any, path: Path_) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def set_at(obj: Any, path: Path_, value: Any) -> Any:
    """A copy of obj with value at path (MISSING removes the key); missing parents become {}."""
    out = copy.deepcopy(obj)
    node = out
    for part in path[:-1]:
        if isinstance(node, dict) and part not in node:
            node[part] = {}
        node = node[part]
    if value is MISSING:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


def is_map(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" and "properties" not in node and not free_form_node(node)


def free_form_node(node: dict[str, Any]) -> bool:
    return bool(node.get("x-kubernetes-preserve-unknown-fields"))


# --- valid values, from the schema ----------------------------------------------------------------------

QUANTITY_KEYS = st.sampled_from(["cpu", "memory", "ephemeral-storage"]) | st.text(min_size=1, max_size=12)
LABEL_KEYS = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,10}[a-z0-9])?(/[a-z0-9]{1,8})?", fullmatch=True) | \
    st.text(min_size=1, max_size=12)
# A pod affinity that is valid, or free-form JSON that mostly is not: only the Deployment's dry run tells.
VALID_AFFINITY = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
    {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)
FREE_FORM = st.just(VALID_AFFINITY) | st.dictionaries(
    st.sampled_from(["nodeAffinity", "podAffinity", "podAntiAffinity"]) | st.text(max_size=8), JSON_VALUES,
    max_size=2)

HINTS: dict[str, st.SearchStrategy] = {
    "replicas": st.integers(0, 2),
    "serving.gpus": st.integers(0, 2),
    "autoscaling.minReplicas": st.integers(1, 2),
    "autoscaling.maxReplicas": st.integers(1, 3),
    "autoscaling.schedules.*.minReplicas": st.integers(1, 3),
    "autoscaling.headroom.replicas": st.just(1),
    "build.gpus": st.integers(0, 1),
}
MAP_KEYS: dict[str, st.SearchStrategy] = {
    "serving.resources.requests": QUANTITY_KEYS,
    "serving.resources.limits": QUANTITY_KEYS,
    "build.resources.requests": QUANTITY_KEYS,
    "build.resources.limits": QUANTITY_KEYS,
    "serving.nodeSelector": LABEL_KEYS,
}


def _string(node: dict[str, Any]) -> st.SearchStrategy:
    lo, hi = node.get("minLength", 0), node.get("maxLength", 10_000)
    if "pattern" in node:
        return st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
    return st.text(min_size=lo, max_size=max(lo, min(hi, LONGEST_TEXT)))


def _number(node: dict[str, Any], integer: bool) -> st.SearchStrategy:
    lo, hi = node.get("minimum"), node.get("maximum")
    if integer:  # JSON integers are int64 to the API server: past that they are numbers (a wrong type)
        lo, hi = (-(2**63) if lo is None else lo), (2**63 - 1 if hi is None else hi)
        if node.get("exclusiveMinimum") and lo is not None:
            lo += 1
        if node.get("exclusiveMaximum") and hi is not None:
            hi -= 1
        return st.integers(lo, hi)
    return st.floats(lo, hi, exclude_min=bool(node.get("exclusiveMinimum")) and lo is not None,
                     exclude_max=bool(node.get("exclusiveMaximum")) and hi is not None,
                     allow_nan=False, allow_infinity=False)


def from_schema(node: dict[str, Any], where: str = "") -> st.SearchStrategy:
    """Values the schema node admits (its CEL rules aside). `where` is the HINTS key of the node."""
    if where in HINTS:
        return HINTS[where]
    if free_form_node(node):
        return FREE_FORM
    if node.get("x-kubernetes-int-or-string"):
        strings = st.from_regex(node["pattern"], fullmatch=True) if "pattern" in node else st.text(max_size=8)
        return st.integers(0, 100) | strings
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    child = (lambda name: f"{where}.{name}" if where else name)
    if kind == "object" and "properties" in node:
        required = set(node.get("required", []))
        props = node["properties"]
        return st.fixed_dictionaries(
            {k: from_schema(v, child(k)) for k, v in props.items() if k in required},
            optional={k: from_schema(v, child(k)) for k, v in props.items() if k not in required})
    if kind == "object":  # a map
        values = from_schema(node.get("additionalProperties", {"type": "string"}), child("*"))
        keys = MAP_KEYS.get(where, st.text(min_size=1, max_size=12))
        return st.dictionaries(keys, values, max_size=min(node.get("maxProperties", LONGEST_LIST), LONGEST_LIST))
    if kind == "array":
        items = from_schema(node["items"], child("*"))
        lo = node.get("minItems", 0)
        hi = min(node.get("maxItems", lo + LONGEST_LIST), lo + LONGEST_LIST)
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            return st.lists(items, min_size=lo, max_size=hi, unique_by=lambda x: tuple(x.get(k) for k in keys))
        if node.get("x-kubernetes-list-type") == "set":
            return st.lists(items, min_size=lo, max_size=hi, unique=True)
        return st.lists(items, min_size=lo, max_size=hi)
    if kind == "string":
        return _string(node)
    if kind == "integer":
        return _number(node, integer=True)
    if kind == "number":
        return _number(node, integer=False)
    if kind == "boolean":
        return st.booleans()
    raise ValueError(f"no strategy for schema node at {where or 'spec'}: {node}")


def node_at(path: Path_, schema: dict[str, Any] = SPEC_SCHEMA) -> dict[str, Any]:
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node["items"]
        elif "properties" in node:
            node = node["properties"][part]
        else:
            node = node["additionalProperties"]
    return node


# --- coherence: the cross-field rules (CEL) that types cannot say -----------------------------------------

TENSOR_SIDES = ("inputs", "outputs")


def cohere(spec: dict[str, Any], keep_build: bool) -> dict[str, Any]:
    """A copy of spec that meets the CRD's CEL rules as far as this test knows them (api/spec.py `cel(...)`):
    most such specs reach the operator. A rule added to the CRD and not here only shifts the counts."""
    s = copy.deepcopy(spec)
    model = s["model"]
    if keep_build and "build" in s:
        model.pop("uri", None)
    else:
        s.pop("build", None)
        model.setdefault("uri", "/models/fuzz/1")
    if not model.get("uri", "").startswith("s3://"):
        model.pop("credentialsSecret", None)
    for tensor in (*model["inputs"], *model["outputs"]):  # a dimension of 0: Triton refuses it
        tensor["dims"] = [d or 1 for d in tensor["dims"]]
    # Output names distinct from input names.
    taken = {t["name"] for t in model["inputs"]}
    for i, t in enumerate(model["outputs"]):
        if t["name"] in taken:
            t["name"] = f"out{i}_{t['name']}"[:128]
    outputs = {t["name"]: t for t in model["outputs"]}
    model["outputs"] = list(outputs.values())
    batch = model.get("maxBatchSize", 64)
    serving = s.setdefault("serving", {})
    batching = serving.get("dynamicBatching")
    if batching and batching.get("preferredBatchSizes"):
        batching["preferredBatchSizes"] = [b for b in batching["preferredBatchSizes"] if b <= batch]
    if serving.get("gpus", 1) == 0:
        serving.pop("gpuProduct", None)
        serving["instanceGroups"] = [{**g, "kind": "CPU"} for g in serving.get("instanceGroups", [{}])]
    rollout = serving.get("rollout")
    if rollout:
        if str(rollout.get("maxSurge")) in ("0", "0%") and str(rollout.get("maxUnavailable")) in ("0", "0%"):
            rollout.pop("maxUnavailable")
        if "steps" in rollout:
            weights: dict[int, dict] = {}
            for step in rollout["steps"]:
                weights.setdefault(step["weight"], step)
            rollout["steps"] = [weights[w] for w in sorted(weights)]
    auto = s.get("autoscaling")
    if auto:
        auto["minReplicas"] = min(auto.get("minReplicas", 1), auto["maxReplicas"])
        metric = auto.get("metric", "requestRate")
        if "target" in auto and (metric in ("requestRate", "concurrency")
                                 or (metric == "gpuUtilization" and auto["target"] > 100)):
            auto.pop("target")
        for schedule in auto.get("schedules", []):
            schedule["minReplicas"] = min(schedule["minReplicas"], auto["maxReplicas"])
            if schedule["end"] <= schedule["start"]:
                schedule["start"], schedule["end"] = "2030-01-01T00:00:00", "2030-01-02T00:00:00"
    build = s.get("build")
    if build:
        model["format"] = "onnx"
        build["batchSizes"] = [b for b in build.get("batchSizes", []) if b <= batch]
        source = build["source"]
        if source["uri"].startswith("s3://"):
            source["uri"] = "pvc://store/source"
        if source.get("format") == "pytorch" and "factory" not in source:
            source["factory"] = "model.py:build"
        if source.get("calibrationData", "calibration.npz") == source.get("evaluationData", "evaluation.npz"):
            source["evaluationData"] = "held-out.npz"
        if "credentialsSecret" in build["artifacts"] and not build["artifacts"]["uri"].startswith("s3://"):
            build["artifacts"].pop("credentialsSecret")
    return s


@st.composite
def valid_specs(draw, coherent: bool | None = None) -> dict[str, Any]:
    spec = draw(from_schema(SPEC_SCHEMA))
    if coherent is None:
        coherent = draw(st.sampled_from([True, True, True, False]))
    return cohere(spec, keep_build=draw(st.integers(0, 9)) == 0) if coherent else spec


# --- one schema violation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mutation:
    family: str        # schema | triton
    kind: str          # what was done, such as dim-zero or above-maximum
    path: str          # where, as the API server spells it
    expect: str        # refused (at apply) | invalid-spec (Ready=False, InvalidSpec)
    names: str         # what the refusal or the InvalidSpec message must name

    def as_dict(self) -> dict[str, str]:
        return {"family": self.family, "kind": self.kind, "path": self.path, "expect": self.expect,
                "names": self.names}


def locations(node: dict[str, Any], value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, dict, Any]]:
    """Every place of the spec a mutation can hit: each present value, and each absent optional field."""
    yield path, node, value
    if value is MISSING or free_form_node(node) or node.get("x-kubernetes-int-or-string"):
        return
    if node.get("type") == "object" and "properties" in node:
        for key, prop in node["properties"].items():
            yield from locations(prop, value.get(key, MISSING), path + (key,))
    elif node.get("type") == "object":
        for key, item in value.items():
            yield from locations(node.get("additionalProperties", {"type": "string"}), item, path + (key,))
    elif node.get("type") == "array":
        for i, item in enumerate(value):
            yield from locations(node["items"], item, path + (i,))


WRONG_TYPES = ["fuzz", 7, 2.5, True, [1], {"fuzzKey": 1}]


def accepts_type(node: dict[str, Any], value: Any) -> bool:
    if free_form_node(node):
        return isinstance(value, dict)
    if node.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    kind = node.get("type")
    return {"string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "array": isinstance(value, list),
            "object": isinstance(value, dict)}[kind]


# Strings that break patterns: blanks, separators, case, control characters, non-ASCII, path tricks.
NASTY = ["", " ", "a b", "UPPER", "-lead", "trail-", ".", "..", "../up", "x/y", "a@b", "a?b", "a#b", 'q"uote',
         "new\nline", "tab\t", "nul\x00", "ünï", "名前", "a" * 300, "http://x", "s3://", "pvc://", "%", "{}",
         "2026-13-45T99:99:99", "Not/A_Zone!"]


def _mutation_ops(node: dict[str, Any], value: Any, path: Path_) -> list[tuple[str, Path_, Callable]]:
    """(kind, path named, draw -> new value at `path`) for each violation this node allows."""
    ops: list[tuple[str, Path_, Callable]] = []
    wrong = [v for v in WRONG_TYPES if not accepts_type(node, v)]
    if wrong:
        ops.append(("wrong-type", path, lambda draw: draw(st.sampled_from(wrong))))
    kind = node.get("type")
    if "enum" in node:
        enum = node["enum"]
        ops.append(("bad-enum", path, lambda draw: draw(
            st.sampled_from([e.lower() if e.lower() not in enum else e.upper() + "X" for e in enum])
            | st.text(min_size=1, max_size=10).filter(lambda s: s not in enum))))
    if kind in ("integer", "number") and "minimum" in node:
        low = node["minimum"] if node.get("exclusiveMinimum") else node["minimum"] - (1 if kind == "integer" else 0.5)
        ops.append(("below-minimum", path, lambda draw: draw(st.sampled_from([low, low - 1000]))))
    if kind in ("integer", "number") and "maximum" in node:
        high = node["maximum"] if node.get("exclusiveMaximum") else node["maximum"] + (1 if kind == "integer" else 0.5)
        ops.append(("above-maximum", path, lambda draw: draw(st.sampled_from([high, high * 1000 + 1]))))
    if kind == "integer":
        ops.append(("past-int64", path, lambda draw: 2**63 + draw(st.integers(0, 2**20))))
    if kind == "string" and "pattern" in node and "enum" not in node:
        pattern, hi = node["pattern"], node.get("maxLength", 10_000)
        bad = (st.sampled_from(NASTY) | st.text(max_size=12)).filter(
            lambda s: len(s) <= hi and not re.fullmatch(pattern, s))
        ops.append(("pattern-mismatch", path, lambda draw: draw(bad)))
    if kind == "string" and node.get("maxLength", 10_000) < 5000 and "enum" not in node:
        ops.append(("too-long", path, lambda draw: "a" * (node["maxLength"] + 1)))
    if kind == "string" and node.get("minLength", 0) >= 1:
        ops.append(("empty-string", path, lambda draw: ""))
    if kind == "array" and node.get("minItems", 0) >= 1:
        ops.append(("no-items", path, lambda draw: []))
    if kind == "array" and node.get("maxItems", 10_000) <= 64:
        def too_many(draw, node=node, value=value):
            item = value[0] if value not in (MISSING, []) else draw(from_schema(node["items"]))
            return [copy.deepcopy(item) for _ in range(node["maxItems"] + 1)]
        ops.append(("too-many-items", path, too_many))
    if kind == "object" and "properties" in node and not free_form_node(node):
        ops.append(("unknown-field", path + ("fuzzUnknownField",), lambda draw: 1))
        present = [] if value is MISSING else [k for k in node.get("required", []) if k in value]
        for key in present:
            ops.append(("missing-required", path + (key,), lambda draw: MISSING))
    if is_map(node) and node.get("maxProperties", 10_000) <= 64:
        def too_many_keys(draw, node=node):
            item = draw(from_schema(node.get("additionalProperties", {"type": "string"})))
            return {f"k{i}": copy.deepcopy(item) for i in range(node["maxProperties"] + 1)}
        ops.append(("too-many-properties", path, too_many_keys))
    return ops


SCHEMA_KINDS = ("wrong-type", "bad-enum", "below-minimum", "above-maximum", "past-int64", "pattern-mismatch",
                "too-long", "empty-string", "no-items", "too-many-items", "unknown-field", "missing-required",
                "too-many-properties")


@st.composite
def schema_mutation(draw, spec: dict[str, Any], kind: str | None = None) -> tuple[dict[str, Any], Mutation]:
    """One violation of `kind` (any kind when None) at a place of the spec drawn among those it fits."""
    ops = [op for p, n, v in locations(SPEC_SCHEMA, spec) if p for op in _mutation_ops(n, v, p)]
    fitting = [op for op in ops if kind is None or op[0] == kind] or ops
    # A section of the spec (model, serving, autoscaling, ...), then a place in it, uniformly: hypothesis's
    # own integers favour small ones, which would leave every mutation in spec.model.
    chance = random.Random(draw(st.integers(0, 2**32 - 1)))
    section = chance.choice(sorted({op[1][0] for op in fitting}))
    kind, target, make = chance.choice([op for op in fitting if op[1][0] == section])
    mutated = set_at(spec, target, make(draw))
    named = k8s_path(target)
    return mutated, Mutation("schema", kind, named, "refused", named)


# --- one thing Triton refuses at load time --------------------------------------------------------------

BAD_NAMES = ["", "a b", 'q"uote', "x/y", "-lead", ".hidden", "..", "ünï", "new\nline", "a" * 129, "a:0"]


TRITON_KINDS = ("dim-zero", "dim-below-wildcard", "dims-empty", "duplicate-tensor", "output-named-like-input",
                "tensor-name", "model-name", "preferred-over-max", "preferred-without-batching", "preferred-zero",
                "max-batch-negative", "max-batch-over-limit", "gpu-group-without-gpus", "instance-count-zero")


@st.composite
def triton_mutation(draw, spec: dict[str, Any], kind: str | None = None) -> tuple[dict[str, Any], Mutation]:
    s = copy.deepcopy(spec)
    model = s["model"]
    side = draw(st.sampled_from(TENSOR_SIDES))
    i = draw(st.integers(0, len(model[side]) - 1))
    tensor = model[side][i]
    where = f"spec.model.{side}[{i}]"
    if kind is None:
        kind = draw(st.sampled_from(TRITON_KINDS))
    serving = s.setdefault("serving", {})
    if kind in ("dim-zero", "dim-below-wildcard"):
        j = draw(st.integers(0, len(tensor["dims"]) - 1))
        tensor["dims"][j] = 0 if kind == "dim-zero" else draw(st.integers(-(2**40), -2))
        return s, Mutation("triton", kind, f"{where}.dims[{j}]", "refused", f"{where}.dims[{j}]")
    if kind == "dims-empty":
        tensor["dims"] = []
        return s, Mutation("triton", kind, f"{where}.dims", "refused", f"{where}.dims")
    if kind == "duplicate-tensor":
        model[side].append({**copy.deepcopy(tensor), "dims": [draw(st.integers(1, 8))]})
        at = f"spec.model.{side}[{len(model[side]) - 1}]"
        return s, Mutation("triton", kind, at, "refused", at)
    if kind == "output-named-like-input":
        model["outputs"][-1]["name"] = model["inputs"][0]["name"]
        return s, Mutation("triton", kind, "spec.model.outputs", "refused", "spec.model.outputs")
    if kind == "tensor-name":
        tensor["name"] = draw(st.sampled_from(BAD_NAMES))
        return s, Mutation("triton", kind, f"{where}.name", "refused", f"{where}.name")
    if kind == "model-name":
        model["name"] = draw(st.sampled_from(BAD_NAMES))
        return s, Mutation("triton", kind, "spec.model.name", "refused", "spec.model.name")
    batching = serving.setdefault("dynamicBatching", {})
    at = "spec.serving.dynamicBatching.preferredBatchSizes"
    if kind == "preferred-over-max":
        largest = draw(st.integers(1, 64))
        model["maxBatchSize"] = largest
        batching["enabled"] = True
        batching["preferredBatchSizes"] = sorted({draw(st.integers(1, largest)), largest + draw(st.integers(1, 64))})
        if "build" in s:
            s["build"]["batchSizes"] = [b for b in s["build"].get("batchSizes", []) if b <= largest]
        return s, Mutation("triton", kind, at, "invalid-spec", at)
    if kind == "preferred-without-batching":
        model["maxBatchSize"] = 0
        batching["preferredBatchSizes"] = [draw(st.integers(1, 64))]
        if "build" in s:
            s["build"]["batchSizes"] = []
        return s, Mutation("triton", kind, at, "invalid-spec", at)
    if kind == "preferred-zero":
        batching["preferredBatchSizes"] = [0]
        return s, Mutation("triton", kind, f"{at}[0]", "refused", f"{at}[0]")
    if kind == "max-batch-negative":
        model["maxBatchSize"] = draw(st.integers(-(2**31), -1))
        return s, Mutation("triton", kind, "spec.model.maxBatchSize", "refused", "spec.model.maxBatchSize")
    if kind == "max-batch-over-limit":
        model["maxBatchSize"] = draw(st.integers(65537, 2**40))
        return s, Mutation("triton", kind, "spec.model.maxBatchSize", "refused", "spec.model.maxBatchSize")
    if kind == "gpu-group-without-gpus":
        serving["gpus"] = 0
        serving.pop("gpuProduct", None)
        serving["instanceGroups"] = [{"kind": "GPU", "count": 1}]
        return s, Mutation("triton", kind, "spec.serving.instanceGroups", "refused", "spec.serving.instanceGroups")
    assert kind == "instance-count-zero"
    serving["instanceGroups"] = [{"kind": "CPU" if serving.get("gpus", 1) == 0 else "GPU", "count": 0}]
    return s, Mutation("triton", kind, "spec.serving.instanceGroups[0].count", "refused",
                       "spec.serving.instanceGroups[0].count")


# --- cases -----------------------------------------------------------------------------------------------

@dataclass
class Case:
    spec: dict[str, Any]
    mutation: Mutation | None = None     # None: a valid (maybe incoherent) spec
    coherent: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.mutation.family if self.mutation else "valid"


@st.composite
def cases(draw, family: str = "valid", kind: str | None = None) -> Case:
    """A case of one family (valid, schema, triton) and, for the mutations, of one kind (any when None)."""
    coherent = family == "triton" or draw(st.sampled_from([True, True, True, False]))
    spec = draw(valid_specs(coherent=coherent))
    if family == "valid":
        return Case(spec, None, coherent)
    mutated, mutation = draw(schema_mutation(spec, kind) if family == "schema" else triton_mutation(spec, kind))
    return Case(mutated, mutation, coherent)


def plan(n: int) -> list[tuple[str, str | None, int]]:
    """(family, kind, how many) adding up to at least n: 40% valid, 40% schema violations and 20% Triton
    refusals, each kind of violation as often as every other."""
    per_schema = -(-n * 4 // 10 // len(SCHEMA_KINDS))
    per_triton = -(-n * 2 // 10 // len(TRITON_KINDS))
    valid = max(0, n - per_schema * len(SCHEMA_KINDS) - per_triton * len(TRITON_KINDS))
    return ([("valid", None, valid)] + [("schema", k, per_schema) for k in SCHEMA_KINDS]
            + [("triton", k, per_triton) for k in TRITON_KINDS])


def collect(strategy: st.SearchStrategy, n: int) -> list[Any]:
    """n examples of strategy, the same on every run for a given schema and hypothesis version
    (derandomized, no example database, generation only)."""
    drawn: list[Any] = []

    @settings(max_examples=n, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(example: Any) -> None:
        drawn.append(example)

    run()
    return drawn[:n]


def draw_here(n: int) -> list[Case]:
    """At least n cases, by plan(n), drawn in this interpreter."""
    out: list[Case] = []
    for family, kind, count in plan(n):
        out += collect(cases(family, kind), count)
    return out


def draw_cases(n: int) -> list[Case]:
    """draw_here(n) in a fresh interpreter. Hypothesis mixes into its draws constants it mines from the local
    modules imported so far (peakserve's, once a test has imported them), so a draw inside a test run depends
    on what that run imported; an interpreter that imports nothing else draws the same cases every time."""
    proc = subprocess.run([sys.executable, "-m", "faults.fuzz.strategies", str(n)], cwd=ROOT / "tests",
                          env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"drawing the cases failed:\n{proc.stderr[-3000:]}")
    return [Case(d["spec"], Mutation(**d["mutation"]) if d["mutation"] else None, d["coherent"])
            for d in json.loads(proc.stdout)]


if __name__ == "__main__":  # python -m faults.fuzz.strategies N (from tests/): the cases as JSON
    print(json.dumps([{"spec": c.spec, "mutation": c.mutation.as_dict() if c.mutation else None,
                       "coherent": c.coherent} for c in draw_here(int(sys.argv[1]))]))
