"""`peakserve build`: spec from YAML or JSON, the result file the Job's termination message reads, exit codes."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from peakserve.builder import pipeline, repository
from peakserve.builder.cli import add_parser
from peakserve.builder.errors import BuildError
from peakserve.builder.pipeline import SUMMARY_LIMIT_BYTES


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="peakserve")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["build", *argv])
    return args.func(args)


def spec(src: Path, out: Path, **build) -> dict:
    return {
        "model": {"name": "tiny", "inputs": [{"name": "x", "dataType": "FP32", "dims": [8]}],
                  "outputs": [{"name": "y", "dataType": "FP32", "dims": [2]}]},
        "serving": {"gpus": 0, "instanceGroups": [{"kind": "CPU"}]},
        "build": {"source": {"uri": str(src)}, "artifacts": {"uri": str(out)}, "candidates": ["int8Dynamic"],
                  "batchSizes": [1, 4], "gates": {"minSpeedup": 0.01, "minBatchSpeedup": 0.01}, **build},
    }


@pytest.fixture
def src(tmp_path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated")
        torch.jit.script(model).save(str(root / "model.pt"))
    rng = np.random.default_rng(0)
    np.savez(root / "evaluation.npz", x=rng.standard_normal((64, 8)).astype(np.float32))
    return root


def write_md(path: Path, spec_: dict) -> Path:
    body = {"apiVersion": "peakserve.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "tiny"},
            "spec": spec_}
    path.write_text(yaml.safe_dump(body))
    return path


def result_of(path: Path) -> dict:
    text = path.read_text()
    assert len(text.encode()) <= SUMMARY_LIMIT_BYTES
    return json.loads(text)


def test_build_from_yaml_succeeds_then_hits_the_cache(src, tmp_path, capsys):
    out, result_file = tmp_path / "out", tmp_path / "result.json"
    md = write_md(tmp_path / "md.yaml", spec(src, out))  # --source/--out default to the absolute URIs
    assert run_cli("-f", str(md), "--result-file", str(result_file), "--quiet", "--threads", "1") == 0
    result = result_of(result_file)
    assert result["phase"] == "Succeeded" and result["candidate"] in ("int8Dynamic", "fp32")
    assert (out / result["artifact"] / "tiny" / "1" / "model.onnx").is_file()
    captured = capsys.readouterr()
    assert captured.err == ""  # --quiet
    assert "candidate" in captured.out and "int8Dynamic" in captured.out and "verdict" in captured.out
    manifest = json.loads((out / result["artifact"] / repository.MANIFEST).read_text())
    assert manifest["speed"]["threads"] == 1

    assert run_cli("-f", str(md), "--result-file", str(result_file)) == 0
    again = result_of(result_file)
    assert again["cached"] is True and again["digest"] == result["digest"]
    assert "cached" in capsys.readouterr().out


def test_job_style_spec_json_failure_exits_3_with_a_failed_summary(src, tmp_path, capsys):
    (src / "evaluation.npz").unlink()
    result_file = tmp_path / "termination-log"
    code = run_cli("--spec-json", json.dumps(spec(Path("/unused"), Path("/unused"))), "--source", str(src),
                   "--out", str(tmp_path / "out"), "--result-file", str(result_file), "--quiet")
    assert code == BuildError.exit_code == 3
    result = result_of(result_file)
    assert (result["phase"], result["reason"]) == ("Failed", "MissingEvaluationData")
    assert "evaluation.npz" in result["message"] and len(result["hash"]) == 12
    assert "MissingEvaluationData" in capsys.readouterr().err


def test_gate_failure_exits_3_and_still_prints_the_table(src, tmp_path, capsys):
    result_file = tmp_path / "r.json"
    raw = spec(src, tmp_path / "out", gates={"maxAbsDiff": 1e-9}, allowFp32Fallback=False)
    assert run_cli("--spec-json", json.dumps({"kind": "ModelDeployment", "spec": raw}), "--result-file",
                   str(result_file), "--quiet") == 3
    assert result_of(result_file)["reason"] == "GateFailed"
    out = capsys.readouterr().out
    assert "int8Dynamic" in out and "rejected" in out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_invalid_spec_exits_3(tmp_path):
    raw = spec(tmp_path, tmp_path)
    raw["build"]["gates"]["minSpeedup"] = -1
    result_file = tmp_path / "r.json"
    assert run_cli("--spec-json", json.dumps(raw), "--result-file", str(result_file)) == 3
    result = result_of(result_file)
    assert result["reason"] == "InvalidSpec" and "spec.build.gates.minSpeedup" in result["message"]


def test_spec_without_build_exits_3(tmp_path):
    raw = spec(tmp_path, tmp_path)
    del raw["build"]
    raw["model"]["uri"] = "/models/tiny"
    result_file = tmp_path / "r.json"
    assert run_cli("--spec-json", json.dumps(raw), "--result-file", str(result_file)) == 3
    assert result_of(result_file)["reason"] == "InvalidSpec"


def test_non_local_uri_needs_an_explicit_directory(tmp_path, capsys):
    raw = spec(tmp_path, tmp_path)
    raw["build"]["source"]["uri"] = "pvc://model-store/tiny"
    assert run_cli("--spec-json", json.dumps(raw), "--result-file", str(tmp_path / "r.json")) == 2
    assert "pass --source DIR" in capsys.readouterr().err
    assert result_of(tmp_path / "r.json")["phase"] == "Failed"


def test_crash_exits_1_with_build_crashed(src, tmp_path, monkeypatch, capsys):
    def crash(*args, **kwargs):
        raise RuntimeError("segfault-ish surprise")
    monkeypatch.setattr(pipeline, "run_build", crash)
    result_file = tmp_path / "r.json"
    assert run_cli("--spec-json", json.dumps(spec(src, tmp_path / "out")), "--result-file", str(result_file)) == 1
    result = result_of(result_file)
    assert (result["phase"], result["reason"]) == ("Failed", "BuildCrashed")
    assert "segfault-ish surprise" in result["message"]
    assert "Traceback" in capsys.readouterr().err
