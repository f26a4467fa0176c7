"""Planted credentials, and the scan that proves none of them got out.

A fault test plants credentials two ways:

- in a Secret that a ModelDeployment references as the spec allows (`spec.model.credentialsSecret`, whose
  keys become the model fetcher's environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL);
- in URIs the API server must refuse at apply (userinfo in `spec.model.uri`, in `spec.build.source.uri`, in
  `spec.autoscaling.prometheusAddress` and `spec.serving.rollout.analysis.prometheusAddress`).

Then, once the faults are over, it scans what users and their log collectors see: the operator logs, every
Event in every namespace, and the status of every ModelDeployment. None may hold a planted value, as text
or base64 (a Secret's data is base64; a leaked Secret object would show it so).

    planted = plant(kubectl, ns, seed=12)
    kubectl.apply(md("ranker", ns, model=planted.model_source()))
    ...faults...
    assert_no_leaks(planted, kubectl, logs=[operator.log_path])
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

SECRET_NAME = "model-store-credentials"
S3_URI = "s3://fault-models/ranker/1"


@dataclass(frozen=True)
class Planted:
    """The planted values; `secret` is the name of the Secret that holds some of them."""

    namespace: str
    secret: str
    in_secret: dict[str, str]                 # Secret key -> value
    in_rejected_uris: tuple[str, ...]         # the credentials inside the refused URIs
    refusals: dict[str, str] = field(default_factory=dict)   # field -> the API server's refusal, as kubectl printed it

    def values(self) -> list[str]:
        """Every string that must never show: the credentials themselves, not the harmless parts around them."""
        return [*self.in_secret.values(), *self.in_rejected_uris]

    def model_source(self) -> dict[str, Any]:
        """`spec.model` fields that fetch the model from S3 with the planted Secret (a merge into small_spec())."""
        return {"uri": S3_URI, "credentialsSecret": self.secret}


def _token(rng: random.Random, what: str) -> str:
    # Letters and digits only, so no encoding (URL, JSON) can change how it reads in a scanned text.
    return f"PLANTED{what}{''.join(rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ23456789') for _ in range(16))}"


# Refused only since issue 12: a CRD of an earlier release (the upgrade test plants under it) accepts it.
SINCE_ISSUE_12 = "spec.serving.rollout.analysis.prometheusAddress"


def plant(kubectl, namespace: str, seed: int, secret: str = SECRET_NAME, current_crd: bool = True) -> Planted:
    """Create the Secret and try the URIs with credentials (each must be refused, naming its field);
    `current_crd=False` skips the refusals an earlier release's CRD did not make."""
    rng = random.Random(seed)
    endpoint_user, endpoint_password = _token(rng, "USER"), _token(rng, "PASS")
    in_secret = {"AWS_ACCESS_KEY_ID": _token(rng, "KEYID"), "AWS_SECRET_ACCESS_KEY": _token(rng, "SECRET"),
                 "AWS_ENDPOINT_URL": f"https://{endpoint_user}:{endpoint_password}@minio.fault.example:9000"}
    kubectl.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": secret, "namespace": namespace}, "stringData": in_secret})
    model_token, source_token, prometheus_token, analysis_token = (
        _token(rng, w) for w in ("URI", "SOURCE", "PROM", "ANALYSIS"))
    refusals = {}
    for path, spec in _rejected_specs(model_token, source_token, prometheus_token, analysis_token).items():
        if path == SINCE_ISSUE_12 and not current_crd:
            continue
        doc = {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment",
               "metadata": {"name": f"leaky-{path.split('.')[-1].lower()}", "namespace": namespace}, "spec": spec}
        proc = kubectl.run("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
        assert proc.returncode != 0, f"a URI with credentials in {path} was accepted"
        assert path in proc.stderr, f"the refusal does not name {path}: {proc.stderr}"
        refusals[path] = proc.stderr.strip()
    return Planted(namespace, secret, in_secret,
                   (model_token, source_token, prometheus_token, analysis_token, endpoint_user, endpoint_password),
                   refusals)


def _rejected_specs(model_token: str, source_token: str, prometheus_token: str,
                    analysis_token: str) -> dict[str, dict[str, Any]]:
    model = {"name": "ranker", "inputs": [{"name": "dense", "dataType": "FP32", "dims": [13]}],
             "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]}
    serving = {"gpus": 1, "gpuProduct": "NVIDIA-A10"}
    return {
        "spec.model.uri": {"model": {**model, "uri": f"https://fault-user:{model_token}@models.fault.example/r/1"},
                           "serving": serving},
        "spec.build.source.uri": {"model": model, "serving": serving, "build": {
            "source": {"uri": f"https://fault-user:{source_token}@git.fault.example/ranker", "format": "onnx",
                       "file": "model.onnx"},
            "artifacts": {"uri": "/tmp/fault-artifacts"}}},
        "spec.autoscaling.prometheusAddress": {
            "model": {**model, "uri": "/var/lib/peakserve/models/ranker/1"}, "serving": serving,
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2,
                            "prometheusAddress": f"http://fault-user:{prometheus_token}@prometheus.fault.example"}},
        "spec.serving.rollout.analysis.prometheusAddress": {
            "model": {**model, "uri": "/var/lib/peakserve/models/ranker/1"},
            "serving": {**serving, "rollout": {"analysis": {
                "prometheusAddress": f"http://fault-user:{analysis_token}@prometheus.fault.example"}}}},
    }


def _forms(value: str) -> set[str]:
    """The value as text, and as base64 the way a Secret's data or a JSON-in-base64 blob would hold it."""
    return {value, base64.b64encode(value.encode()).decode().rstrip("=")}


def _hits(planted: Planted, text: str) -> list[str]:
    return sorted({value for value in planted.values() for form in _forms(value) if form in text})


def scan(planted: Planted, kubectl, logs: Iterable[Path] = ()) -> list[str]:
    """Where a planted value shows: one line per (place, value). Empty: nothing leaked."""
    found = []
    for log in logs:
        log = Path(log)
        if not log.exists():
            continue
        for number, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
            found += [f"{log.name}:{number}: {value}" for value in _hits(planted, line)]
    events = json.loads(kubectl.run("get", "events", "--all-namespaces", "-o", "json").stdout)["items"]
    for event in events:
        where = f"Event {event['metadata']['namespace']}/{event['metadata']['name']} ({event.get('reason')})"
        found += [f"{where}: {value}" for value in _hits(planted, json.dumps(event))]
    objects = json.loads(kubectl.run("get", "modeldeployments", "--all-namespaces", "-o", "json").stdout)["items"]
    for obj in objects:
        where = f"ModelDeployment {obj['metadata']['namespace']}/{obj['metadata']['name']} status"
        found += [f"{where}: {value}" for value in _hits(planted, json.dumps(obj.get("status") or {}))]
    return found


def assert_no_leaks(planted: Planted, kubectl, logs: Iterable[Path] = ()) -> dict[str, int]:
    """scan() must find nothing; returns what was scanned (for the figures)."""
    logs = [Path(p) for p in logs]
    found = scan(planted, kubectl, logs)
    assert not found, "planted credentials leaked:\n" + "\n".join(found[:20])
    events = json.loads(kubectl.run("get", "events", "--all-namespaces", "-o", "json").stdout)["items"]
    objects = json.loads(kubectl.run("get", "modeldeployments", "--all-namespaces", "-o", "json").stdout)["items"]
    return {"plantedValues": len(planted.values()), "logLines": sum(
        len(p.read_text(errors="replace").splitlines()) for p in logs if p.exists()),
            "events": len(events), "modelDeployments": len(objects), "leaks": 0,
            "refusedUris": len(planted.refusals),
            # The API server quotes a refused value back to whoever sent it (kubectl's stderr): not ours to fix.
            "refusalsQuotingTheValueToTheSender": sum(
                any(v in text for v in planted.in_rejected_uris) for text in planted.refusals.values())}
