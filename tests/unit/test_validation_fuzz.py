"""The fuzz runs' findings, replayed without a cluster (tests/faults/fuzz/regressions.yaml), and the same
oracle over specs hypothesis draws from the CRD schema: whatever parse_spec accepts renders a config.pbtxt
that Triton would load, and children that survive the server-side apply encoding.

The cluster run is tests/faults/test_fuzzed_specs.py (`make test-faults`)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from faults.fuzz.strategies import load_regressions, valid_specs
from peakserve.api.validation import InvalidSpec, parse_spec
from peakserve.cluster.act import refuses_input
from peakserve.cluster.client import ApiException, apply_body
from peakserve.decide import decide
from peakserve.decide.snapshot import Snapshot
from peakserve.render import render_children
from peakserve.render.owner import Owner
from peakserve.render.triton_config import render_config_pbtxt

pytest.importorskip("tritonclient.grpc.model_config_pb2")
from faults.fuzz.triton_rules import triton_refusals  # noqa: E402  (needs tritonclient)

REGRESSIONS = load_regressions()
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def body_for(spec: dict, name: str = "fz") -> dict:
    return {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "fz", "uid": "6f1c2a3e-0000-4000-8000-00000000f022",
                         "generation": 1}, "spec": spec}


def children_of(spec) -> list[dict]:
    return render_children(Owner.of(body_for({})), spec, "0123456789abcdef" if spec.build else None)


def test_the_regressions_file_is_well_formed():
    assert len({r["id"] for r in REGRESSIONS}) == len(REGRESSIONS) >= 7
    for entry in REGRESSIONS:
        assert entry["expect"] in ("refused", "invalid-spec", "served"), entry["id"]
        assert entry["found"] and entry["fix"] and entry["unit"], entry["id"]


@pytest.mark.parametrize("entry", REGRESSIONS, ids=[r["id"] for r in REGRESSIONS])
def test_regression(entry):
    spec = entry["spec"]
    if entry["unit"] == "parse-refuses":
        with pytest.raises(InvalidSpec) as err:
            parse_spec(spec)
        assert entry["parse_names"] in str(err.value), str(err.value)
    elif entry["unit"] == "triton-loads":
        parsed = parse_spec(spec)
        assert triton_refusals(render_config_pbtxt(parsed), parsed.serving.gpus) == []
    elif entry["unit"] == "apply-body":
        for child in children_of(parse_spec(spec)):
            assert yaml.safe_load(apply_body(child)) == child, child["kind"]
        # What json.dumps alone sends: go-yaml, like PyYAML, refuses its surrogate escapes.
        assert "\\ud83d" in json.dumps(spec)
    elif entry["unit"] == "rejected-build":
        parsed = parse_spec(spec)
        first = decide(parsed, Snapshot(body=body_for(spec)), NOW)
        assert [a.obj["kind"] for a in first.applies] == ["Job"]
        refused = decide(parsed, Snapshot(body=body_for(spec), rejected="Job.batch is invalid"), NOW)
        assert refused.applies == () and refused.dry_run == ()
        assert refused.invalid and "Job.batch is invalid" in refused.invalid
        ready = next(c for c in refused.status.conditions if c.type == "Ready")
        assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    elif entry["unit"] == "typed-patch-500":
        err = ApiException(status=500, reason="Internal Server Error")
        err.body = json.dumps({"kind": "Status", "code": 500, "message": (
            "failed to create typed patch object (fz/fz; apps/v1, Kind=Deployment): "
            ".spec.template.spec.affinity.nodeAfinity: field not declared in schema")})
        assert refuses_input(err)
        assert "nodeAfinity" in str(parse_spec(spec).serving.affinity)
    else:
        raise AssertionError(f"unknown replay {entry['unit']!r}")


def test_a_server_error_is_not_a_refusal():
    err = ApiException(status=500, reason="Internal Server Error")
    err.body = json.dumps({"kind": "Status", "code": 500, "message": "etcdserver: request timed out"})
    assert not refuses_input(err)


@pytest.mark.parametrize("text", ["plain", "snow\u2603man", "emoji\U0001F600", "\\ud83d\\ude00 as text",
                                  "\\\U0001F600", "\x00\x1f\x7f\x8e\ufffd", "\U0010FFFF"])
def test_apply_body_is_yaml_for_any_string(text):
    obj = {"metadata": {"annotations": {"k": text}}, "list": [text, {"nested": text}]}
    assert yaml.safe_load(apply_body(obj)) == obj


@settings(max_examples=80, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(valid_specs(coherent=True))
def test_what_parse_spec_accepts_triton_loads_and_apply_can_send(raw):
    """The unit twin of the cluster run: no exception but InvalidSpec; a config Triton loads; children that
    the apply encoding carries unchanged. Shrunk failures belong in regressions.yaml."""
    try:
        spec = parse_spec(raw)
    except InvalidSpec:
        return
    config = render_config_pbtxt(spec)
    assert triton_refusals(config, spec.serving.gpus) == [], config
    for child in children_of(spec):
        assert yaml.safe_load(apply_body(child)) == child, child["kind"]
