"""The local Triton harness without a server: the local serving copy of a built repository, the install
paths, and the Prometheus parser. The real server is exercised in test_triton_local.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from peakserve.render.triton_config import render_config_pbtxt
from peakserve_harness.triton import install
from peakserve_harness.triton.metrics_text import metric_values, parse_metrics
from peakserve_harness.triton.python_backend import (MODEL_TEMPLATE, UnsupportedModel, local_config,
                                             local_repository)
from peakserve.api.validation import parse_spec

SPEC = {
    "model": {
        "name": "mlp", "version": 3, "uri": "pvc://store/mlp/3", "format": "onnx",
        "maxBatchSize": 64,
        "inputs": [{"name": "x", "dataType": "FP32", "dims": [13]}],
        "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}],
    },
    "serving": {
        "instanceGroups": [{"kind": "GPU", "count": 2}],
        "dynamicBatching": {"preferredBatchSizes": [16, 64], "maxQueueDelayMicroseconds": 200},
    },
}


def production_config(patch: dict | None = None) -> str:
    spec = json.loads(json.dumps(SPEC))
    for section, values in (patch or {}).items():
        spec[section].update(values)
    return render_config_pbtxt(parse_spec(spec))


def built_repository(root: Path, config: str | None = None) -> Path:
    built = root / "built"
    (built / "mlp" / "3").mkdir(parents=True)
    (built / "manifest.json").write_text("{}\n")
    (built / "mlp" / "config.pbtxt").write_text(config or production_config())
    (built / "mlp" / "3" / "model.onnx").write_bytes(b"onnx bytes")
    (built / "mlp" / "labels.txt").write_text("a\nb\n")
    return built


# ------------------------------------------------------------------------------- local_config

def test_local_config_changes_only_the_backend_and_the_instance_kind():
    production = production_config()
    assert 'platform: "onnxruntime_onnx"' in production and "KIND_GPU count: 2" in production
    local, onnx = local_config(production)
    assert onnx
    changed = [(a, b) for a, b in zip(production.splitlines(), local.splitlines()) if a != b]
    assert changed == [('platform: "onnxruntime_onnx"', 'backend: "python"'),
                       ("  { kind: KIND_GPU count: 2 }", "  { kind: KIND_CPU count: 2 }")]
    assert len(local.splitlines()) == len(production.splitlines())
    # batching, warmup, io and version policy are kept as rendered
    for kept in ("max_batch_size: 64", "preferred_batch_size: [ 16, 64 ]",
                 "max_queue_delay_microseconds: 200", 'model_warmup [', "zero_data: true",
                 "versions: [ 3 ]", 'name: "x"', 'name: "score"'):
        assert kept in local


def test_local_config_cpu_groups_gpus_lists_default_filename_and_threads():
    config = ('name: "m"\nbackend: "onnxruntime"\ndefault_model_filename: "model.onnx"\n'
              "instance_group [ { kind: KIND_GPU count: 3 gpus: [ 0, 1 ] }, "
              "{ kind: KIND_CPU count: 1 } ]\n")
    local, onnx = local_config(config, intra_op_threads=2)
    assert onnx
    assert 'backend: "python"' in local and "onnxruntime" not in local
    assert "default_model_filename" not in local and "gpus" not in local
    assert "KIND_GPU" not in local and "kind: KIND_CPU count: 3" in local
    assert local.endswith('parameters { key: "intra_op_threads" value: { string_value: "2" } }\n')


def test_local_config_keeps_python_models_and_refuses_other_platforms():
    python = production_config({"model": {"format": "pytorch"}})
    local, onnx = local_config(python)
    assert not onnx and 'backend: "python"' in local and "KIND_CPU count: 2" in local
    with pytest.raises(UnsupportedModel, match='platform "pytorch_libtorch"'):
        local_config(production_config({"model": {"format": "torchscript"}}))


# ---------------------------------------------------------------------------- local_repository

def test_local_repository_links_versions_and_writes_the_wrapper(tmp_path):
    built = built_repository(tmp_path)
    dest = local_repository(built, tmp_path / "local")
    assert dest == tmp_path / "local"
    assert sorted(p.name for p in dest.iterdir()) == ["mlp"]  # no manifest.json
    model = dest / "mlp"
    assert (model / "config.pbtxt").read_text() == local_config(production_config())[0]
    assert (model / "labels.txt").read_text() == "a\nb\n"
    onnx = model / "3" / "model.onnx"
    assert onnx.read_bytes() == b"onnx bytes"
    assert os.path.samefile(onnx, built / "mlp" / "3" / "model.onnx")  # hardlinked, same fs
    assert (model / "3" / "model.py").read_text() == MODEL_TEMPLATE.read_text()
    # the built repository is untouched
    assert sorted(p.name for p in (built / "mlp" / "3").iterdir()) == ["model.onnx"]
    assert (built / "mlp" / "config.pbtxt").read_text() == production_config()


def test_local_repository_refusals(tmp_path):
    built = built_repository(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        local_repository(built, tmp_path / "full")
    (built / "mlp" / "3" / "model.onnx").unlink()
    with pytest.raises(UnsupportedModel, match="model.onnx is missing"):
        local_repository(built, tmp_path / "local")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnsupportedModel, match="no model directories"):
        local_repository(empty, tmp_path / "local2")


def test_model_template_is_python_backend_code():
    source = MODEL_TEMPLATE.read_text()
    compile(source, str(MODEL_TEMPLATE), "exec")
    for needed in ("class TritonPythonModel", "def initialize", "def execute",
                   "CPUExecutionProvider", "import triton_python_backend_utils"):
        assert needed in source


# ------------------------------------------------------------------------------------ install

def test_paths_without_an_install_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PEAKSERVE_CACHE", str(tmp_path))
    assert install.triton_home() == tmp_path / f"pytriton-{install.PYTRITON_VERSION}"
    assert not install.is_installed()
    with pytest.raises(install.TritonNotInstalled, match="python -m peakserve_harness.triton.install"):
        install.tritonserver_paths()
    # a stamp for other requirements (an older install) does not count
    install.triton_home().mkdir()
    (install.triton_home() / ".installed").write_text(json.dumps({"requirements": ["x==1"]}))
    assert not install.is_installed()


def test_the_servers_onnxruntime_is_the_projects():
    """The local server runs model.onnx with the onnxruntime the model builder validated it with."""
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'"onnxruntime=={install.ONNXRUNTIME_VERSION}"' in pyproject


# ------------------------------------------------------------------------------------ metrics

def test_parse_metrics():
    text = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="1"} 3
nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 0
nv_inference_queue_duration_us{model="m",version="1"} 504
nv_inference_pending_request_count{model="m",version="1"} 0
nv_cpu_utilization 0.25
odd{path="a\\\\b",msg="say \\"hi\\"",} NaN 1700000000000

nv_inference_request_success{model="n",version="2"} 7
"""
    metrics = parse_metrics(text)
    assert metrics[("nv_inference_request_success",
                    frozenset({("model", "m"), ("version", "1")}))] == 3.0
    assert metrics[("nv_cpu_utilization", frozenset())] == 0.25
    (odd_labels, odd_value), = [(k[1], v) for k, v in metrics.items() if k[0] == "odd"]
    assert dict(odd_labels) == {"path": "a\\b", "msg": 'say "hi"'} and odd_value != odd_value
    assert sorted(metric_values(metrics, "nv_inference_request_success")) == [3.0, 7.0]
    assert metric_values(metrics, "nv_inference_request_success", model="n") == [7.0]
    assert metric_values(metrics, "nv_inference_queue_duration_us", model="m") == [504.0]
    with pytest.raises(ValueError):
        parse_metrics("not a metric line at all {")
