"""parse_spec: refusals name the field a user must fix; and the `peakserve render` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peakserve.api.spec import ModelDeploymentSpec
from peakserve.cli import main
from peakserve.api.validation import InvalidSpec, parse_spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ranker.yaml"


def test_minimal_spec_parses_with_defaults(spec_dict):
    spec = parse_spec(spec_dict())
    assert isinstance(spec, ModelDeploymentSpec)
    assert spec.replicas == 1 and spec.autoscaling is None
    assert spec.serving.gpus == 1
    # unset: the stable side replaces one pod at a time, covered by the Ready canary (render/deployment.py)
    assert (spec.serving.rollout.max_surge, spec.serving.rollout.max_unavailable) == (None, None)
    assert spec.serving.rollout.steps == [] and spec.serving.rollout.analysis_in_force() is None


def test_example_parses():
    spec = parse_spec(yaml.safe_load(EXAMPLE.read_text())["spec"])
    assert spec.model.name == "ranker" and spec.replicas == 2


@pytest.mark.parametrize("raw", [None, "model: x", [], 42], ids=["none", "string", "list", "int"])
def test_missing_spec(raw):
    with pytest.raises(InvalidSpec, match="spec is missing"):
        parse_spec(raw)


@pytest.mark.parametrize("patch,field", [
    ({"model": {"name": ""}}, "spec.model.name"),
    ({"model": {"name": "bad name!"}}, "spec.model.name"),
    ({"model": {"uri": "http://example.com/model"}}, "spec.model.uri"),
    ({"model": {"maxBatchSize": -1}}, "spec.model.maxBatchSize"),
    ({"model": {"format": "tensorflow"}}, "spec.model.format"),
    ({"model": {"inputs": [{"name": "x", "dataType": "FP33", "dims": [1]}]}}, "spec.model.inputs.0.dataType"),
    ({"serving": {"gpus": 17}}, "spec.serving.gpus"),
    ({"serving": {"gpuResource": "amd.com/gpu"}}, "spec.serving.gpuResource"),
    ({"serving": {"startupTimeoutSeconds": 5}}, "spec.serving.startupTimeoutSeconds"),
    ({"autoscaling": {"minReplicas": 1}}, "spec.autoscaling.maxReplicas"),
    ({"replicas": -1}, "spec.replicas"),
])
def test_errors_name_the_field(spec_dict, patch, field):
    with pytest.raises(InvalidSpec) as err:
        parse_spec(spec_dict(patch))
    assert str(err.value).startswith(field + ":"), str(err.value)


def test_missing_model_names_spec_model(spec_dict):
    raw = spec_dict()
    del raw["model"]
    with pytest.raises(InvalidSpec, match=r"^spec\.model: Field required"):
        parse_spec(raw)


def test_unknown_fields_are_refused(spec_dict):
    with pytest.raises(InvalidSpec, match=r"spec\.serving\.gpuCount"):
        parse_spec(spec_dict({"serving": {"gpuCount": 2}}))


def test_every_problem_is_reported(spec_dict):
    with pytest.raises(InvalidSpec) as err:
        parse_spec(spec_dict({"model": {"name": ""}, "replicas": -1}))
    assert "spec.model.name" in str(err.value) and "spec.replicas" in str(err.value)


def test_preferred_batch_sizes_beyond_max_batch_size(spec_dict):
    with pytest.raises(InvalidSpec) as err:
        parse_spec(spec_dict({"model": {"maxBatchSize": 64},
                              "serving": {"dynamicBatching": {"preferredBatchSizes": [32, 128, 256]}}}))
    message = str(err.value)
    assert "spec.serving.dynamicBatching.preferredBatchSizes" in message and "spec.model.maxBatchSize" in message
    # Only the sizes that are too big are listed.
    assert "preferredBatchSizes [128, 256] exceed" in message


def test_preferred_batch_size_equal_to_max_is_fine(spec_dict):
    spec = parse_spec(spec_dict({"model": {"maxBatchSize": 64},
                                 "serving": {"dynamicBatching": {"preferredBatchSizes": [64]}}}))
    assert spec.serving.dynamic_batching.preferred_batch_sizes == [64]


@pytest.mark.parametrize("inputs,outputs,repeated", [
    (["x", "x"], ["y"], "x"),
    (["x"], ["x"], "x"),  # an input and an output with the same name
])
def test_duplicate_tensor_names(spec_dict, inputs, outputs, repeated):
    tensors = lambda names: [{"name": n, "dataType": "FP32", "dims": [1]} for n in names]  # noqa: E731
    with pytest.raises(InvalidSpec, match=rf"repeat tensor names \['{repeated}'\]"):
        parse_spec(spec_dict({"model": {"inputs": tensors(inputs), "outputs": tensors(outputs)}}))


def test_invalid_spec_is_a_value_error():
    # Callers that only know ValueError still catch it.
    assert issubclass(InvalidSpec, ValueError)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_render_example(capsys):
    assert main(["render", "-f", str(EXAMPLE)]) == 0
    out = capsys.readouterr()
    documents = list(yaml.safe_load_all(out.out))
    assert [d["kind"] for d in documents] == ["ConfigMap", "Service", "Deployment", "PodDisruptionBudget"]
    assert all(d["metadata"]["namespace"] == "default" for d in documents)
    assert out.err == ""


def test_cli_render_namespace(capsys):
    assert main(["render", "-f", str(EXAMPLE), "-n", "ml-serving"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {d["metadata"]["namespace"] for d in documents} == {"ml-serving"}


def test_cli_render_from_stdin(capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLE.read_text()))
    assert main(["render", "-f", "-"]) == 0
    assert len(list(yaml.safe_load_all(capsys.readouterr().out))) == 4


def test_cli_render_invalid_file(tmp_path, capsys):
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["name"] = "broken"
    body["spec"]["model"]["maxBatchSize"] = 16  # below preferredBatchSizes [64, 128, 256]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(body))
    assert main(["render", "-f", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == ""  # nothing half-rendered
    assert out.err.startswith("broken: invalid spec: ")
    assert "spec.serving.dynamicBatching.preferredBatchSizes" in out.err


def test_cli_render_missing_spec(tmp_path, capsys):
    path = tmp_path / "nospec.yaml"
    path.write_text("apiVersion: peakserve.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: empty}\n")
    assert main(["render", "-f", str(path)]) == 1
    assert "empty: invalid spec: spec is missing" in capsys.readouterr().err


def test_cli_render_several_documents(tmp_path, capsys):
    text = EXAMPLE.read_text()
    second = yaml.safe_load(text)
    second["metadata"]["name"] = "ranker-canary"
    second["spec"]["autoscaling"] = {"maxReplicas": 4}
    path = tmp_path / "two.yaml"
    path.write_text(text + "\n---\n" + yaml.safe_dump(second))
    assert main(["render", "-f", str(path)]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert len(documents) == 4 + 5
    assert {d["metadata"]["ownerReferences"][0]["name"] for d in documents} == {"ranker", "ranker-canary"}


def test_a_schedule_date_that_does_not_exist_is_an_invalid_spec():
    # The CRD's pattern admits 2026-11-31; without this check the floor computation would crash each pass.
    raw = {"model": {"name": "m", "uri": "pvc://c/m", "inputs": [{"name": "x", "dataType": "FP32", "dims": [1]}],
                     "outputs": [{"name": "y", "dataType": "FP32", "dims": [1]}]},
           "autoscaling": {"maxReplicas": 4, "schedules": [
               {"name": "promo", "start": "2026-11-31T00:00:00", "end": "2026-12-01T02:00:00", "minReplicas": 2}]}}
    with pytest.raises(InvalidSpec, match=r"schedules\[promo\]\.start: '2026-11-31T00:00:00' is not a date"):
        parse_spec(raw)
