"""run_build end to end on tiny models made here: layout, manifest, cache, gates, and every failure reason."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from peakserve.builder.probe_data import read_probe
from peakserve.builder import candidates as cands
from peakserve.builder import pipeline, sources
from peakserve.builder.errors import BuildError
from peakserve.api.identity import build_hash, build_inputs
from peakserve.builder.pipeline import BuildResult, run_build
from peakserve.builder.speed import SpeedBudget
from peakserve.render.triton_config import render_config_pbtxt
from peakserve.api.validation import parse_spec

GPU_SERVING = {"serving": {"gpus": 1, "instanceGroups": [{"kind": "GPU"}]}}
FAST = SpeedBudget(seconds=0.3, warmup=1, min_iters=3, max_iters=30)  # the speed gate's logic, not its precision


def merge(base: dict, patch: dict) -> dict:
    """base deep-merged with patch (dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in patch.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# --- tiny models and their data -----------------------------------------------------------------

class MLP(torch.nn.Module):
    def __init__(self, n_in: int = 16, n_out: int = 4):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n_in, 64), torch.nn.ReLU(), torch.nn.Linear(64, n_out))

    def forward(self, features):
        return self.net(features)


class Noisy(torch.nn.Module):
    """Differs from its own export: the random numbers of torch and of ONNX Runtime are not the same."""

    def forward(self, features):
        return features[:, :4] + torch.rand_like(features[:, :4])


RANKER_FACTORY = '''
import torch

class Ranker(torch.nn.Module):
    """Embedding lookups over INT64 ids plus dense features, then an MLP; outputs a click probability."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(500, 8)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3 * 8 + 4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))

    def forward(self, ids, dense):
        return torch.sigmoid(self.mlp(torch.cat([self.emb(ids).flatten(1), dense], 1)))

def make_ranker():
    return Ranker()
'''


def script(module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated")
        torch.jit.script(module.eval()).save(str(path))


def mlp_raw(**build) -> dict:
    """An MLP ModelDeployment spec served on CPU; build fields deep-merged from `build`."""
    return {
        "model": {"name": "mlp", "version": 3, "maxBatchSize": 64,
                  "inputs": [{"name": "features", "dataType": "FP32", "dims": [16]}],
                  "outputs": [{"name": "out", "dataType": "FP32", "dims": [4]}]},
        "serving": {"gpus": 0, "instanceGroups": [{"kind": "CPU", "count": 1}]},
        "build": merge({"source": {"uri": "/models/mlp"}, "artifacts": {"uri": "/artifacts"},
                        "candidates": ["int8Dynamic", "int8Static"], "batchSizes": [1, 16],
                        # The speed of a 2-layer MLP is noise; these tests pin the pipeline, not the CPU.
                        "gates": {"minSpeedup": 0.01, "minBatchSpeedup": 0.01}}, build),
    }


def mlp_source(root: Path, *, calibration: bool = True, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    script(MLP(), root / "model.pt")
    rng = np.random.default_rng(seed)
    if calibration:
        np.savez(root / "calibration.npz", features=rng.standard_normal((128, 16)).astype(np.float32))
    np.savez(root / "evaluation.npz", features=rng.standard_normal((256, 16)).astype(np.float32))
    return root


def build(raw: dict, src: Path, out: Path, **kwargs) -> BuildResult:
    return run_build(parse_spec(raw), src, out, quiet=True, speed_budget=FAST, **kwargs)


def no_heavy_work(monkeypatch) -> None:
    """Fail the test if the build gets as far as loading a model or quantizing."""
    def forbidden(*a, **k):
        raise AssertionError("heavy work started")
    for name in ("load_torch_model", "load_onnx_model"):
        monkeypatch.setattr(sources, name, forbidden)
    for name in ("make_int8_dynamic", "make_int8_static", "make_fp16", "prepare_for_quantization"):
        monkeypatch.setattr(cands, name, forbidden)


def published(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# --- a successful build ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlp")
    src, out = mlp_source(root / "src"), root / "out"
    # Loose accuracy thresholds: both int8 candidates reach the speed gate (static int8 of random
    # weights drifts ~0.1), so the manifest holds every figure.
    raw = mlp_raw(gates={"maxAbsDiff": 0.5, "p99AbsDiff": 0.1})
    started = time.monotonic()
    result = build(raw, src, out)
    return {"raw": raw, "spec": parse_spec(raw), "src": src, "out": out, "result": result,
            "seconds": time.monotonic() - started}


def test_build_succeeds_with_an_int8_candidate(mlp_build):
    result = mlp_build["result"]
    assert (result.phase, result.reason, result.cached) == ("Succeeded", "GatesPassed", False)
    assert result.candidate in ("int8Dynamic", "int8Static") and result.precision == "int8"
    assert result.artifact == build_hash(mlp_build["spec"])
    assert {"speedup", "speedupB1", "speedupB16", "maxAbsDiff", "p99AbsDiff", "exportMaxAbsDiff"} <= set(result.figures)
    assert result.figures["maxAbsDiff"] <= 0.5
    other = ({"int8Dynamic", "int8Static"} - {result.candidate}).pop()
    assert other in result.rejected and result.rejected[other]
    assert mlp_build["seconds"] < 30


def test_published_layout_is_a_triton_repository_with_nothing_else(mlp_build):
    out, spec, result = mlp_build["out"], mlp_build["spec"], mlp_build["result"]
    assert published(out) == [result.artifact]  # no staging directory left beside it
    repo = out / result.artifact
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    assert files == ["manifest.json", "mlp/3/model.onnx", "mlp/3/probe.npz", "mlp/config.pbtxt"]
    # Triton reads it as another user than the builder: directories 755, files 644.
    assert {oct(p.stat().st_mode & 0o777) for p in [repo, *repo.rglob("*")] if p.is_dir()} == {"0o755"}
    assert {oct(p.stat().st_mode & 0o777) for p in repo.rglob("*") if p.is_file()} == {"0o644"}
    config = (repo / "mlp" / "config.pbtxt").read_text()
    assert config == render_config_pbtxt(spec)
    assert 'platform: "onnxruntime_onnx"' in config and "model_warmup" in config and "KIND_CPU" in config


def test_published_probe_holds_the_evaluation_rows_for_the_canary_analysis(mlp_build):
    probe = mlp_build["out"] / mlp_build["result"].artifact / "mlp" / "3" / "probe.npz"
    inputs, labels = read_probe(probe, ["features"])
    with np.load(mlp_build["src"] / "evaluation.npz") as evaluation:
        assert np.array_equal(inputs["features"], evaluation["features"])
    assert labels is None  # a generic task reads no labels


def test_published_model_serves_the_signature_and_matches_its_digest(mlp_build):
    repo = mlp_build["out"] / mlp_build["result"].artifact
    model = repo / "mlp" / "3" / "model.onnx"
    assert mlp_build["result"].digest == "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    (out,) = session.run(["out"], {"features": np.ones((5, 16), np.float32)})
    assert out.shape == (5, 4) and out.dtype == np.float32  # dynamic batch axis, fp32 I/O


def test_manifest_records_inputs_outputs_tools_host_and_every_candidate(mlp_build):
    repo = mlp_build["out"] / mlp_build["result"].artifact
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["hash"] == mlp_build["result"].hash
    assert manifest["inputs"] == build_inputs(mlp_build["spec"])
    src = mlp_build["src"]
    for role, name in (("model", "model.pt"), ("calibration", "calibration.npz"), ("evaluation", "evaluation.npz")):
        entry = manifest["files"]["inputs"][role]
        assert entry == {"path": name, "sha256": "sha256:" + hashlib.sha256((src / name).read_bytes()).hexdigest()}
    for rel, digest in manifest["files"]["outputs"].items():
        assert digest == "sha256:" + hashlib.sha256((repo / rel).read_bytes()).hexdigest()
    assert set(manifest["files"]["outputs"]) == {"mlp/3/model.onnx", "mlp/3/probe.npz", "mlp/config.pbtxt"}
    assert manifest["probe"] == {"path": "mlp/3/probe.npz", "rows": 256, "labels": False}
    assert {"python", "torch", "onnx", "onnxruntime", "numpy", "peakserve"} <= set(manifest["tools"])
    cpu = manifest["host"]["cpu"]
    assert cpu["cores"] >= 1 and isinstance(cpu["isa"], list) and cpu["model"]
    assert "CPUExecutionProvider" in manifest["host"]["onnxruntimeProviders"]
    assert manifest["export"]["exporter"] == "torchscript" and manifest["export"]["maxAbsDiff"] <= 1e-4
    for name in ("int8Dynamic", "int8Static"):
        entry = manifest["candidates"][name]
        assert {"maxAbsDiff", "p99AbsDiff"} <= set(entry["accuracy"])
        assert set(entry["speed"]) == {"1", "16"} and {"p50Ms", "p99Ms", "rowsPerS"} <= set(entry["speed"]["1"])
        assert entry["verdict"] in ("chosen", "passed")
    assert manifest["candidates"]["int8Static"]["notes"]["calibrationRows"] == 128
    assert set(manifest["speed"]["fp32"]) == {"1", "16"}
    # Side by side: in each round every model runs once, so all have the same number of timed runs.
    for batch in ("1", "16"):
        runs = {manifest["speed"]["fp32"][batch]["iterations"]} | {
            manifest["candidates"][n]["speed"][batch]["iterations"] for n in ("int8Dynamic", "int8Static")}
        assert len(runs) == 1 and FAST.min_iters <= runs.pop() <= FAST.max_iters
    assert manifest["speed"]["threads"] == 2 and manifest["speed"]["budget"]["seconds"] == FAST.seconds
    assert manifest["choice"]["candidate"] == mlp_build["result"].candidate
    assert manifest["result"] == {**mlp_build["result"].summary(), "cached": False}
    steps = [s["step"] for s in manifest["steps"]]
    assert "exporting fp32 ONNX" in steps and all(s["seconds"] >= 0 for s in manifest["steps"])
    assert manifest["data"]["overlappingRows"] == 0 and manifest["startedAt"] <= manifest["finishedAt"]


def test_second_build_is_a_cache_hit(mlp_build, monkeypatch):
    no_heavy_work(monkeypatch)
    started = time.monotonic()
    again = build(mlp_build["raw"], mlp_build["src"], mlp_build["out"])
    assert time.monotonic() - started < 1.0
    assert again.cached is True
    first = mlp_build["result"]
    assert (again.hash, again.candidate, again.digest, again.figures) == (first.hash, first.candidate, first.digest,
                                                                          first.figures)
    assert again.summary()["cached"] is True and again.details["candidates"]


# --- other tasks and formats -------------------------------------------------------------------------

def test_ranker_from_a_pytorch_factory_with_int64_ids(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ranker_model.py").write_text(RANKER_FACTORY)
    namespace: dict = {}
    exec(compile(RANKER_FACTORY, "ranker_model.py", "exec"), namespace)
    torch.manual_seed(1)
    model = namespace["make_ranker"]().eval()
    torch.save(model.state_dict(), src / "weights.pt")
    rng = np.random.default_rng(1)

    def rows(n):
        return {"ids": rng.integers(0, 500, (n, 3)).astype(np.int64),
                "dense": rng.standard_normal((n, 4)).astype(np.float32)}
    evaluation, calibration = rows(300), rows(100)
    with torch.no_grad():
        score = model(torch.from_numpy(evaluation["ids"]), torch.from_numpy(evaluation["dense"])).numpy().ravel()
    labels = (score + rng.normal(0, 0.02, len(score)) > np.median(score)).astype(np.int64)
    for name in calibration:
        calibration[name][:7] = evaluation[name][:7]  # seven rows leak from evaluation into calibration
    np.savez(src / "eval.npz", label=labels, **evaluation)
    np.savez(src / "calib.npz", **calibration)
    raw = {
        "model": {"name": "ranker", "inputs": [{"name": "ids", "dataType": "INT64", "dims": [3]},
                                                {"name": "dense", "dataType": "FP32", "dims": [4]}],
                  "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}]},
        "serving": {"gpus": 0, "instanceGroups": [{"kind": "CPU"}]},
        "build": {"source": {"uri": "/src", "format": "pytorch", "file": "weights.pt",
                             "factory": "ranker_model.py:make_ranker", "calibrationData": "calib.npz",
                             "evaluationData": "eval.npz"},
                  "task": "ranker", "candidates": ["int8Dynamic", "int8Static"], "batchSizes": [8],
                  "gates": {"minSpeedup": 0.01, "minBatchSpeedup": 0.01, "k": 20}, "artifacts": {"uri": "/out"}},
    }
    result = build(raw, src, tmp_path / "out")
    assert result.phase == "Succeeded"
    manifest = json.loads((tmp_path / "out" / result.hash / "manifest.json").read_text())
    for name in ("int8Dynamic", "int8Static"):
        figures = manifest["candidates"][name]["accuracy"]
        assert {"auc", "aucFp32", "aucDelta", "logloss", "loglossFp32", "loglossDelta", "topKAgreement"} <= set(figures)
        assert figures["aucFp32"] > 0.9  # labels follow the fp32 score
        assert figures["aucDelta"] == pytest.approx(figures["aucFp32"] - figures["auc"])
    assert manifest["files"]["inputs"]["factory"]["path"] == "ranker_model.py"
    inputs, probe_labels = read_probe(tmp_path / "out" / result.hash / "ranker" / "1" / "probe.npz", ["ids", "dense"])
    assert np.array_equal(inputs["ids"], evaluation["ids"]) and np.array_equal(probe_labels, labels)
    assert manifest["probe"] == {"path": "ranker/1/probe.npz", "rows": 300, "labels": True}
    assert manifest["data"]["overlappingRows"] == 7 and "7 of 300" in manifest["data"]["warnings"][0]
    # The embedding table feeds a Gather; the notes say whether quantization touched it.
    assert "quantizedGathers" in manifest["candidates"]["int8Static"]["notes"]


def test_embedding_model_from_onnx_skips_the_export_check(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    torch.manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(MLP(16, 8).eval(), (torch.zeros(2, 16),), str(src / "encoder.onnx"),
                          input_names=["features"], output_names=["embedding"],
                          dynamic_axes={"features": {0: "b"}, "embedding": {0: "b"}}, opset_version=17, dynamo=False)
    rng = np.random.default_rng(2)
    np.savez(src / "evaluation.npz", features=rng.standard_normal((200, 16)).astype(np.float32))
    raw = merge(mlp_raw(source={"format": "onnx", "file": "encoder.onnx"}, task="embedding",
                        candidates=["int8Dynamic"], gates={"k": 5}),
                {"model": {"outputs": [{"name": "embedding", "dataType": "FP32", "dims": [8]}]}})
    result = build(raw, src, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / result.hash / "manifest.json").read_text())
    assert manifest["export"]["exporter"] is None and "already fp32 ONNX" in manifest["export"]["skipped"]
    figures = manifest["candidates"]["int8Dynamic"]["accuracy"]
    assert {"minCosine", "meanCosine", "recallAtK"} <= set(figures) and 0 < figures["recallAtK"] <= 1
    assert "calibration" not in manifest["files"]["inputs"]  # not needed without int8Static, and absent
    assert "exportMaxAbsDiff" not in result.figures


# --- gates decide ------------------------------------------------------------------------------------

def test_impossible_thresholds_reject_int8_and_fall_back_to_fp32(tmp_path):
    src = mlp_source(tmp_path / "src", calibration=False)  # int8Static is not asked for: no data needed
    raw = mlp_raw(candidates=["int8Dynamic"], gates={"maxAbsDiff": 1e-9})
    result = build(raw, src, tmp_path / "out")
    assert (result.phase, result.reason, result.candidate, result.precision) == ("Succeeded", "Fp32Fallback", "fp32",
                                                                                 "fp32")
    reason = result.rejected["int8Dynamic"]
    assert reason.startswith("accuracy: maxAbsDiff ") and "> maxAbsDiff 1e-09" in reason
    repo = tmp_path / "out" / result.hash
    fp32_model = (repo / "mlp" / "3" / "model.onnx").read_bytes()
    assert b"MatMulInteger" not in fp32_model and b"DynamicQuantizeLinear" not in fp32_model


def test_without_fp32_fallback_a_gate_failure_fails_the_build_and_publishes_nothing(tmp_path):
    src = mlp_source(tmp_path / "src")
    raw = mlp_raw(gates={"maxAbsDiff": 1e-9}, allowFp32Fallback=False)
    with pytest.raises(BuildError) as err:
        build(raw, src, tmp_path / "out")
    assert err.value.reason == "GateFailed" and err.value.exit_code == 3
    assert "int8Dynamic: accuracy: maxAbsDiff" in err.value.message and "int8Static: accuracy:" in err.value.message
    assert err.value.details["candidates"]["int8Dynamic"]["verdict"] == "rejected"
    assert published(tmp_path / "out") == []


def test_a_candidate_that_cannot_be_made_is_rejected_not_fatal(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("quantizer exploded on node Gemm_3")
    monkeypatch.setattr(cands, "make_int8_dynamic", broken)
    raw = mlp_raw(gates={"maxAbsDiff": 0.5, "p99AbsDiff": 0.1})
    result = build(raw, mlp_source(tmp_path / "src"), tmp_path / "out")
    assert result.phase == "Succeeded"
    assert result.rejected["int8Dynamic"] == "int8Dynamic failed: RuntimeError: quantizer exploded on node Gemm_3"
    assert result.candidate == "int8Static"


def test_gpu_serving_without_cuda_rejects_fp16_and_cpu_timed_int8(tmp_path):
    raw = merge(mlp_raw(candidates=["int8Dynamic", "fp16"]), GPU_SERVING)
    result = build(raw, mlp_source(tmp_path / "src"), tmp_path / "out")
    assert result.reason == "Fp32Fallback"
    assert result.rejected["fp16"].startswith("fp16 needs a GPU build (CUDAExecutionProvider unavailable)")
    assert "serving is on GPU but the speed gate ran on CPU" in result.rejected["int8Dynamic"]


def test_fp16_on_cpu_serving_is_refused(tmp_path):
    result = build(mlp_raw(candidates=["fp16"]), mlp_source(tmp_path / "src"), tmp_path / "out")
    assert result.reason == "Fp32Fallback" and result.rejected["fp16"].startswith("serving is on CPU")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_fp16_is_built_and_gated_when_cuda_is_there(tmp_path, monkeypatch):
    # No GPU here: pretend onnxruntime has CUDA; sessions then run the fp16 graph on the CPU.
    from peakserve.builder import runtime
    monkeypatch.setattr(runtime, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    raw = merge(mlp_raw(candidates=["fp16"]), GPU_SERVING)
    result = build(raw, mlp_source(tmp_path / "src"), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / result.hash / "manifest.json").read_text())
    assert manifest["providers"]["used"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    entry = manifest["candidates"]["fp16"]
    assert entry["accuracy"]["maxAbsDiff"] < 0.01 and entry["notes"]["ops"].get("Cast", 0) >= 2  # fp32 I/O kept
    assert entry["verdict"] in ("chosen", "rejected") and "speedFigures" in entry
    # Whichever way the real timing went, the verdict, the choice and the precision agree.
    chosen = entry["verdict"] == "chosen"
    assert (result.candidate, result.precision) == (("fp16", "fp16") if chosen else ("fp32", "fp32"))
    assert chosen or result.rejected["fp16"].startswith("speed:")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_fp16_that_passes_both_gates_is_chosen_and_served_as_fp16(tmp_path, monkeypatch):
    # The fp16 graph runs slower on a CPU than fp32, so the choice of fp16 is proven with its measured
    # throughput scaled up tenfold, as a GPU would show it; accuracy is still measured for real.
    from peakserve.builder import runtime, speed

    monkeypatch.setattr(runtime, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    measure = speed.measure

    def fp16_ten_times_faster(*args, **kwargs):
        results = measure(*args, **kwargs)
        for figures in results["fp16"].values():
            figures["rowsPerS"] *= 10
        return results

    monkeypatch.setattr(speed, "measure", fp16_ten_times_faster)
    result = build(merge(mlp_raw(candidates=["fp16"]), GPU_SERVING), mlp_source(tmp_path / "src"), tmp_path / "out")
    assert (result.candidate, result.precision, result.reason) == ("fp16", "fp16", "GatesPassed")
    assert result.figures["speedup"] >= 9 and result.figures["maxAbsDiff"] < 0.01


# --- failures, each with its reason ------------------------------------------------------------------

def expect(reason: str, raw: dict, src: Path, out: Path, *fragments: str) -> BuildError:
    with pytest.raises(BuildError) as err:
        build(raw, src, out)
    assert err.value.reason == reason, err.value
    for fragment in fragments:
        assert fragment in err.value.message, err.value.message
    assert not any(p.name.startswith(".") for p in out.iterdir()) if out.is_dir() else True  # no staging left
    assert not (out / build_hash(parse_spec(raw))).exists()
    return err.value


def test_corrupt_torchscript_file_is_invalid_model(tmp_path):
    src = mlp_source(tmp_path / "src")
    (src / "model.pt").write_bytes(b"this is not a zip archive")
    expect("InvalidModel", mlp_raw(), src, tmp_path / "out", "model.pt", "TorchScript")


def test_missing_model_file_is_invalid_model(tmp_path):
    src = mlp_source(tmp_path / "src")
    expect("InvalidModel", mlp_raw(source={"file": "nope.pt"}), src, tmp_path / "out", "nope.pt", "not found")


def test_corrupt_onnx_file_is_invalid_model(tmp_path):
    src = mlp_source(tmp_path / "src")
    (src / "model.onnx").write_bytes(b"\x00garbage")
    expect("InvalidModel", mlp_raw(source={"format": "onnx", "file": "model.onnx"}), src, tmp_path / "out",
           "model.onnx", "not a valid ONNX model")


def test_state_dict_that_does_not_fit_the_factory_is_invalid_model(tmp_path):
    src = mlp_source(tmp_path / "src")
    (src / "factory.py").write_text(RANKER_FACTORY)
    torch.save(MLP().state_dict(), src / "weights.pt")
    raw = mlp_raw(source={"format": "pytorch", "file": "weights.pt", "factory": "factory.py:make_ranker"})
    expect("InvalidModel", raw, src, tmp_path / "out", "weights.pt", "factory.py")


def test_model_file_outside_the_source_directory_is_refused(tmp_path):
    src = mlp_source(tmp_path / "src")
    expect("InvalidModel", mlp_raw(source={"file": "../elsewhere/model.pt"}), src, tmp_path / "out", "outside")


def test_output_shape_mismatch_says_expected_and_found(tmp_path):
    raw = merge(mlp_raw(), {"model": {"outputs": [{"name": "out", "dataType": "FP32", "dims": [5]}]}})
    expect("SignatureMismatch", raw, mlp_source(tmp_path / "src"), tmp_path / "out",
           "expected out: FP32['N', 5]", "found out: FP32['N', 4]")


def test_input_the_model_cannot_take_is_a_signature_mismatch(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    torch.manual_seed(0)
    script(MLP(n_in=12), src / "model.pt")  # the spec and the data say 16 features
    np.savez(src / "calibration.npz", features=np.zeros((8, 16), np.float32))
    np.savez(src / "evaluation.npz", features=np.zeros((8, 16), np.float32))
    expect("SignatureMismatch", mlp_raw(), src, tmp_path / "out", "torch model failed on the evaluation inputs")


def test_onnx_graph_with_other_tensor_names_is_a_signature_mismatch(tmp_path):
    src = mlp_source(tmp_path / "src")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(MLP().eval(), (torch.zeros(2, 16),), str(src / "model.onnx"), input_names=["x"],
                          output_names=["out"], dynamic_axes={"x": {0: "b"}, "out": {0: "b"}}, dynamo=False)
    err = expect("SignatureMismatch", mlp_raw(source={"format": "onnx", "file": "model.onnx"}), src,
                 tmp_path / "out", "unexpected input x: FP32", "input features: FP32['batch', 16] missing")
    assert "model.onnx" in err.message


def test_data_with_the_wrong_dtype_is_a_signature_mismatch(tmp_path):
    src = mlp_source(tmp_path / "src")
    np.savez(src / "evaluation.npz", features=np.zeros((8, 16), np.float64))
    expect("SignatureMismatch", mlp_raw(), src, tmp_path / "out", "evaluation data evaluation.npz",
           "expected features: FP32", "found features: FP64")


def test_missing_calibration_data_refuses_random_calibration(tmp_path, monkeypatch):
    no_heavy_work(monkeypatch)
    src = mlp_source(tmp_path / "src", calibration=False)
    expect("MissingCalibrationData", mlp_raw(), src, tmp_path / "out", "calibration.npz",
           "refusing to calibrate on random data")


def test_missing_evaluation_data(tmp_path, monkeypatch):
    no_heavy_work(monkeypatch)
    src = mlp_source(tmp_path / "src")
    (src / "evaluation.npz").unlink()
    expect("MissingEvaluationData", mlp_raw(), src, tmp_path / "out", "evaluation.npz")


def test_ranker_evaluation_without_labels(tmp_path, monkeypatch):
    no_heavy_work(monkeypatch)
    raw = merge(mlp_raw(task="ranker"), {"model": {"outputs": [{"name": "out", "dataType": "FP32", "dims": [1]}]}})
    expect("MissingEvaluationData", raw, mlp_source(tmp_path / "src"), tmp_path / "out", "'label'")


def test_export_that_disagrees_with_torch_is_an_export_mismatch(tmp_path):
    src = mlp_source(tmp_path / "src")
    script(Noisy(), src / "model.pt")
    expect("ExportMismatch", mlp_raw(), src, tmp_path / "out", "exportTolerance 0.0001")


def test_destination_under_a_file_is_unwritable_before_any_work(tmp_path, monkeypatch):
    no_heavy_work(monkeypatch)
    (tmp_path / "blocker").write_text("a file, not a directory")
    with pytest.raises(BuildError) as err:
        build(mlp_raw(), mlp_source(tmp_path / "src"), tmp_path / "blocker" / "out")
    assert err.value.reason == "DestinationUnwritable" and "blocker" in err.value.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_destination_is_unwritable(tmp_path, monkeypatch):
    no_heavy_work(monkeypatch)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(BuildError) as err:
            build(mlp_raw(), mlp_source(tmp_path / "src"), out)
        assert err.value.reason == "DestinationUnwritable"
    finally:
        out.chmod(0o700)


def test_a_directory_that_refuses_writes_is_unwritable(tmp_path, monkeypatch):
    # What a read-only mount does, in a way that also holds for root (which ignores mode bits).
    from peakserve.builder import repository

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    src = mlp_source(tmp_path / "src")
    monkeypatch.setattr(repository.tempfile, "mkstemp", refuse)
    no_heavy_work(monkeypatch)
    with pytest.raises(BuildError) as err:
        build(mlp_raw(), src, tmp_path / "out")
    assert err.value.reason == "DestinationUnwritable" and "Permission denied" in err.value.message


def test_a_failed_build_leaves_no_staging_directory(tmp_path, monkeypatch):
    def late_failure(*args, **kwargs):
        raise BuildError("GateFailed", "simulated failure after the candidates were written")
    monkeypatch.setattr(pipeline._Build, "_speed_gate", late_failure)
    out = tmp_path / "out"
    with pytest.raises(BuildError):
        build(mlp_raw(), mlp_source(tmp_path / "src"), out)
    assert published(out) == []


# --- fallbacks inside steps --------------------------------------------------------------------------

def test_export_falls_back_to_the_dynamo_exporter(tmp_path, monkeypatch):
    from peakserve.builder import export
    from peakserve.builder.progress import Progress

    real_export = torch.onnx.export
    calls = []

    def torchscript_exporter_breaks(*args, dynamo, **kwargs):
        calls.append(dynamo)
        if not dynamo:
            raise RuntimeError("Unsupported: ONNX export of operator foo")
        return real_export(*args, dynamo=dynamo, **kwargs)
    monkeypatch.setattr(torch.onnx, "export", torchscript_exporter_breaks)
    spec = parse_spec(mlp_raw())
    path = tmp_path / "fp32.onnx"
    example = {"features": np.zeros((4, 16), np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert export.export_onnx(MLP().eval(), example, spec.model, path, Progress(quiet=True)) == "dynamo"
    assert calls == [False, True]
    export.check_exported(path, spec.model)  # names, types and the dynamic batch axis survived
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"features": np.ones((7, 16), np.float32)})
    assert out.shape == (7, 4)


def test_quantization_proceeds_when_pre_processing_fails(tmp_path, monkeypatch):
    from onnxruntime.quantization import shape_inference

    def gives_up(*args, **kwargs):
        raise ValueError("symbolic shape inference gave up")
    monkeypatch.setattr(shape_inference, "quant_pre_process", gives_up)
    result = build(mlp_raw(candidates=["int8Dynamic"], gates={"maxAbsDiff": 0.5, "p99AbsDiff": 0.1}),
                   mlp_source(tmp_path / "src"), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / result.hash / "manifest.json").read_text())
    assert manifest["quantization"] == {"preProcessed": False,
                                        "preProcessError": "ValueError: symbolic shape inference gave up"}
    assert manifest["candidates"]["int8Dynamic"]["notes"]["ops"].get("MatMulInteger", 0) == 2
