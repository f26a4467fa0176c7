"""The pure parts of build-gated rollouts: the build Job, the build hash, reading a build's result,
and the conditions a ModelDeployment shows while its model builds, passes or fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from peakserve.api.identity import build_hash
from peakserve.decide.build_job import parse_result as _parse_result, termination_message as _termination_message
from peakserve.decide.conditions import Observed, derive_conditions, event_type
from peakserve.render import render_all, render_children
from peakserve.render.build_job import artifact_uri, render_build_job
from peakserve.render.owner import Owner
from peakserve.api.validation import parse_spec

from test_conditions import deployment

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "inputs"
OWNER = Owner("ranker", "shop", "uid-1")
T0 = "2026-11-11T00:00:00Z"


def ranker_spec(**build):
    body = yaml.safe_load((GOLDEN / "ranker-build.yaml").read_text())
    body["spec"]["build"].update(build)
    return parse_spec(body["spec"])


def test_the_hash_follows_what_changes_the_artifact_only():
    base = ranker_spec()
    assert build_hash(base) == build_hash(ranker_spec())
    assert build_hash(base) != build_hash(ranker_spec(batchSizes=[1, 64]))
    assert build_hash(base) != build_hash(ranker_spec(gates={"maxAucDrop": 0.001}))
    assert build_hash(base) != build_hash(ranker_spec(image="ghcr.io/peakserve/model-builder:0.2.0"))
    # Where the result goes, and how many replicas serve it, do not change what is built.
    assert build_hash(base) == build_hash(ranker_spec(artifacts={"uri": "pvc://other/store"}))
    assert build_hash(base) == build_hash(base.model_copy(update={"replicas": 7}))


def test_build_job_is_named_after_the_hash_and_fails_fast_on_bad_input():
    spec = ranker_spec()
    job = render_build_job(OWNER, spec, build_hash(spec))
    assert job["metadata"]["name"] == f"ranker-build-{build_hash(spec)}"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [3]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    build = pod["containers"][0]
    assert build["args"][build["args"].index("--result-file") + 1] == "/dev/termination-log"
    assert build["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # The builder gets the whole spec and computes the same hash the Job is named after.
    sent = parse_spec(json.loads(build["args"][build["args"].index("--spec-json") + 1]))
    assert build_hash(sent) == build_hash(spec)
    mounts = {m["mountPath"]: m for m in build["volumeMounts"]}
    assert mounts["/source"]["readOnly"] and mounts["/source"]["subPath"] == "sources/ranker"
    assert not mounts["/artifacts"]["readOnly"] and mounts["/artifacts"]["subPath"] == "artifacts"
    # Build pods never carry the serving selector label: the Triton Service must not route to them.
    assert "peakserve.io/model-deployment" not in job["spec"]["template"]["metadata"]["labels"]
    assert job["spec"]["template"]["metadata"]["labels"] is not job["metadata"]["labels"]


def test_gpu_build_requests_a_gpu_and_tolerates_the_taint():
    spec = ranker_spec(gpus=1)
    pod = render_build_job(OWNER, spec, build_hash(spec))["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_children_serve_the_artifact_of_the_passed_build():
    spec = ranker_spec()
    bhash = build_hash(spec)
    assert artifact_uri(spec, bhash) == f"pvc://model-store/artifacts/{bhash}/ranker/1"
    children = render_children(OWNER, spec, bhash)
    dep = next(c for c in children if c["kind"] == "Deployment")
    mount = next(m for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                 if m["name"] == "model-source")
    assert mount["subPath"] == f"artifacts/{bhash}/ranker/1"
    assert dep["spec"]["template"]["metadata"]["annotations"]["peakserve.io/build-hash"] == bhash
    with pytest.raises(ValueError, match="passed"):
        render_children(OWNER, spec)
    assert [c["kind"] for c in render_all(OWNER, spec)][0] == "Job"


@pytest.mark.parametrize("text,expected", [
    ('{"phase": "Succeeded", "precision": "int8"}', {"phase": "Succeeded", "precision": "int8"}),
    ('{"phase": "Failed", "reason": "GateFailed"}', {"phase": "Failed", "reason": "GateFailed"}),
    ("Traceback (most recent call last): ...", None),
    ('{"phase": "Whatever"}', None),
    ("[1, 2]", None),
    (None, None),
])
def test_build_result_parsing(text, expected):
    assert _parse_result(text) == expected


def test_result_is_read_from_the_build_container_even_as_an_init_container():
    pod = {"status": {"initContainerStatuses": [
        {"name": "build", "state": {"terminated": {"exitCode": 0, "message": '{"phase": "Succeeded"}'}}}],
        "containerStatuses": [{"name": "upload", "state": {"terminated": {"exitCode": 0}}}]}}
    assert _termination_message(pod) == '{"phase": "Succeeded"}'


def conditions_for(build: dict, dep: dict | None) -> dict[str, dict]:
    obs = Observed(generation=2, deployment=dep, build=build, endpoint="http://ranker.shop.svc:8000")
    return {c["type"]: c for c in derive_conditions(obs, [], T0)}


def test_first_build_running_holds_the_first_rollout():
    conds = conditions_for({"phase": "Running", "hash": "abc", "job": "ranker-build-abc"}, None)
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "Building")
    assert (conds["BuildSucceeded"]["status"], conds["BuildSucceeded"]["reason"]) == ("Unknown", "Building")
    assert conds["Progressing"]["reason"] == "Building"
    assert event_type(conds["BuildSucceeded"]) == "Normal"


def test_failed_build_keeps_the_previous_version_serving():
    build = {"phase": "Failed", "reason": "GateFailed", "message": "aucDrop 0.02 > maxAucDrop 0.005",
             "hash": "new", "job": "ranker-build-new"}
    conds = conditions_for(build, deployment(replicas=2))
    assert conds["Ready"]["status"] == "True", "the old pods still serve"
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "GateFailed")
    assert "keeps serving" in conds["Degraded"]["message"] and "aucDrop" in conds["Degraded"]["message"]
    assert (conds["BuildSucceeded"]["status"], conds["Progressing"]["reason"]) == ("False", "BuildFailed")
    assert event_type(conds["BuildSucceeded"]) == "Warning" and event_type(conds["Progressing"]) == "Warning"


def test_failed_first_build_explains_why_nothing_serves():
    conds = conditions_for({"phase": "Failed", "reason": "MissingCalibrationData",
                            "message": "calibration.npz not found", "hash": "a", "job": "j"}, None)
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "MissingCalibrationData")


def test_passed_build_reports_its_choice():
    conds = conditions_for({"phase": "Succeeded", "reason": "GatesPassed", "message": "int8Dynamic: 2.9x",
                            "hash": "a", "job": "j"}, deployment(replicas=2))
    assert (conds["BuildSucceeded"]["status"], conds["BuildSucceeded"]["reason"]) == ("True", "GatesPassed")
    assert conds["Degraded"]["status"] == "False"
