"""Bad input is refused at `kubectl apply` by the real API server, with a message naming the field."""

from __future__ import annotations

import pytest
import yaml

from .cluster import md

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bad_ns(kubectl):
    """One namespace for the whole table: a rejected apply leaves nothing behind to clean."""
    kubectl.run("create", "namespace", "t-bad-input")
    yield "t-bad-input"
    kubectl.run("delete", "namespace", "t-bad-input", "--wait=false", check=False)

BUILD = {"source": {"uri": "pvc://store/src"}, "artifacts": {"uri": "pvc://store/artifacts"}}


def build(**changes):
    """A build section that is valid except for `changes` (merged one level deep)."""
    out = {k: dict(v) for k, v in BUILD.items()}
    for key, value in changes.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and key in out else value
    return out


# (case id, spec overrides, text the API server's refusal must contain: the field, then the problem)
CASES = [
    ("model-missing", {"model": None}, "spec.model: Required value"),
    ("name-pattern", {"model": {"name": "bad name!"}}, "spec.model.name: Invalid value"),
    ("uri-scheme", {"model": {"uri": "http://models.example/ranker"}}, "spec.model.uri: Invalid value"),
    ("format-enum", {"model": {"format": "tensorflow"}}, 'spec.model.format: Unsupported value: "tensorflow"'),
    ("precision-enum", {"model": {"precision": "int4"}}, 'spec.model.precision: Unsupported value: "int4"'),
    ("inputs-empty", {"model": {"inputs": []}}, "spec.model.inputs: Invalid value"),
    ("dims-below-minus-one", {"model": {"inputs": [{"name": "x", "dataType": "FP32", "dims": [-2]}]}},
     "spec.model.inputs[0].dims[0]: Invalid value"),
    ("datatype-enum", {"model": {"outputs": [{"name": "y", "dataType": "FLOAT", "dims": [1]}]}},
     'spec.model.outputs[0].dataType: Unsupported value: "FLOAT"'),
    ("credentials-for-pvc", {"model": {"uri": "pvc://store/m", "credentialsSecret": "s3-creds"}},
     "spec.model.credentialsSecret: Invalid value: \"object\": credentialsSecret applies only to s3:// URIs"),
    ("too-many-gpus", {"serving": {"gpus": 17}}, "spec.serving.gpus: Invalid value: 17"),
    ("gpu-resource", {"serving": {"gpuResource": "amd.com/gpu"}}, "spec.serving.gpuResource: Invalid value"),
    ("product-without-gpus", {"serving": {"gpus": 0}}, "spec.serving.gpuProduct: Invalid value"),
    ("gpu-in-resources", {"serving": {"resources": {"limits": {"nvidia.com/gpu": 2}}}},
     "spec.serving.resources.limits: Invalid value"),
    ("managed-triton-flag", {"serving": {"extraArgs": ["--http-port=9000"]}},
     "spec.serving.extraArgs: Invalid value"),
    ("startup-timeout", {"serving": {"startupTimeoutSeconds": 5}},
     "spec.serving.startupTimeoutSeconds: Invalid value: 5"),
    ("rollout-zero-zero", {"serving": {"rollout": {"maxSurge": 0, "maxUnavailable": 0}}},
     "spec.serving.rollout: Invalid value: \"object\": maxSurge and maxUnavailable cannot both be zero"),
    ("negative-replicas", {"replicas": -1}, "spec.replicas: Invalid value: -1"),
    ("min-above-max", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
     "spec.autoscaling.minReplicas: Invalid value: \"object\": minReplicas must be <= maxReplicas"),
    ("max-missing", {"autoscaling": {"minReplicas": 1}}, "spec.autoscaling.maxReplicas: Required value"),
    ("gpu-util-over-100", {"autoscaling": {"maxReplicas": 4, "metric": "gpuUtilization", "target": 150}},
     "spec.autoscaling.target: Invalid value"),
    # The capacity metrics (requestRate, the default) aim at targetUtilization of the capacity, not at a target.
    ("target-with-request-rate", {"autoscaling": {"maxReplicas": 4, "target": 100}},
     "requestRate and concurrency aim at targetUtilization of the capacity"),
    ("utilization-over-100", {"autoscaling": {"maxReplicas": 4, "targetUtilization": 120}},
     "spec.autoscaling.targetUtilization: Invalid value: 120"),
    ("metric-enum", {"autoscaling": {"maxReplicas": 4, "metric": "qps"}},
     'spec.autoscaling.metric: Unsupported value: "qps"'),
    ("unknown-field", {"replica": 3}, 'unknown field "spec.replica"'),
    # Credentials never travel in a URI (status and Events show URIs); they belong in a Secret.
    ("credentials-in-uri", {"model": {"uri": "s3://AKIAEXAMPLE:s3cr3t@bucket/ranker"}},
     "spec.model.uri: Invalid value"),
    ("uri-and-build", {"build": BUILD}, "set exactly one of model.uri (a ready model) and build"),
    ("build-source-s3", {"build": build(source={"uri": "s3://bucket/src"})},
     "build.source.uri must be pvc://CLAIM/PATH or an absolute path"),
    ("build-same-data", {"build": build(source={"evaluationData": "calibration.npz"})},
     "calibrationData and evaluationData must be different files"),
    ("build-pytorch-needs-factory", {"build": build(source={"format": "pytorch"})},
     "format pytorch needs factory"),
    ("build-batch-over-max", {"build": build(batchSizes=[1, 128])},
     "build.batchSizes must be <= model.maxBatchSize"),
    ("build-candidate-enum", {"build": build(candidates=["int4"])}, 'Unsupported value: "int4"'),
    ("build-gate-bound", {"build": build(gates={"minCosine": 2})}, "spec.build.gates.minCosine: Invalid value"),
    ("artifacts-credentials-in-uri", {"build": build(artifacts={"uri": "s3://key:secret@bucket/a"})},
     "spec.build.artifacts.uri: Invalid value"),
]


def _manifest(ns: str, overrides: dict) -> dict:
    body = md("bad", ns, **{k: v for k, v in overrides.items() if v is not None})
    for key, value in overrides.items():
        if value is None:
            body["spec"].pop(key)
    return body


@pytest.mark.parametrize("overrides,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_api_server_rejects_with_the_field_named(kubectl, bad_ns, overrides, expected):
    result = kubectl.apply(_manifest(bad_ns, overrides), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert expected in result.stderr
    assert kubectl.get("modeldeployment", "bad", bad_ns) is None  # nothing was stored


def test_table_is_big_enough():
    assert len(CASES) >= 12 and len({c[0] for c in CASES}) == len(CASES)


def test_the_base_manifest_is_valid(kubectl, bad_ns):
    # Guards the table: each case differs from an accepted manifest by exactly its override.
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(md("ok", bad_ns)))
    assert "created (server dry run)" in result.stdout
