"""The sample models in model_repo/ train deterministically into a build source that matches the
signature of their example ModelDeployment, reach their held-out quality, and export to ONNX.

Each sample is trained once per module (a subprocess, as `make samples` runs it); the determinism
checks train one more epoch-1 run per sample and compare weight digests.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "model_repo"
NP_TYPES = {"INT64": np.int64, "FP32": np.float32}
ONNX_TOLERANCE = 1e-4


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(sample: str, out: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(SAMPLES / sample / "train.py"), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{sample} epoch 1/" in proc.stdout, "progress lines are printed"
    return json.loads((out / "train_report.json").read_text())


def signature(example: str) -> dict:
    model = yaml.safe_load((REPO / "examples" / example).read_text())["spec"]["model"]
    return {"inputs": model["inputs"], "outputs": model["outputs"], "max_batch_size": model["maxBatchSize"]}


def rows(*arrays: np.ndarray) -> list[bytes]:
    """One key per row, over all the arrays side by side."""
    return [b"".join(a[i].tobytes() for a in arrays) for i in range(len(arrays[0]))]


def check_npz(path: Path, tensors: list[dict], extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files}
    assert set(data) == {t["name"] for t in tensors} | set(extra)
    n = len(next(iter(data.values())))
    for t in tensors:
        array = data[t["name"]]
        assert array.dtype == NP_TYPES[t["dataType"]], t["name"]
        assert array.shape == (n, *t["dims"]), t["name"]
    return data


def onnx_max_diff(module, inputs: dict[str, np.ndarray], outputs: list[str], path: Path, batches) -> float:
    """Export with the TorchScript-based exporter and a dynamic batch dimension; run it with
    onnxruntime on each batch slice and return the largest |torch - onnx|."""
    names = list(inputs)
    example = tuple(torch.from_numpy(inputs[n][:4]) for n in names)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="no signature found for <torch.ScriptMethod", category=UserWarning)
        torch.onnx.export(module, example, str(path), dynamo=False, input_names=names, output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in names + outputs}, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names
    assert [o.name for o in session.get_outputs()] == outputs
    worst = 0.0
    for batch in batches:
        feed = {n: inputs[n][batch] for n in names}
        (got,) = session.run(outputs, feed)
        with torch.no_grad():
            want = module(*(torch.from_numpy(feed[n]) for n in names)).numpy()
        assert got.shape == want.shape and np.isfinite(got).all()
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


# ---------------------------------------------------------------- ranker

@pytest.fixture(scope="module")
def ranker(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranker")
    return out, train("ranker", out)


@pytest.fixture(scope="module")
def ranker_module(ranker):
    out, _ = ranker
    factory = load(out / "model.py", "sample_ranker_factory")
    model = factory.build_model()
    model.load_state_dict(torch.load(out / "state_dict.pt", weights_only=True))
    return model.eval()


def test_ranker_writes_a_build_source_matching_its_signature(ranker):
    out, report = ranker
    sig = signature("ranker-build.yaml")
    assert (out / "model.py").read_text() == (SAMPLES / "ranker" / "model.py").read_text()
    calibration = check_npz(out / "calibration.npz", sig["inputs"])
    evaluation = check_npz(out / "evaluation.npz", sig["inputs"], extra=("label",))
    assert len(calibration["dense"]) == 512 and len(evaluation["dense"]) == 4096
    assert evaluation["label"].dtype == np.float32 and evaluation["label"].shape == (4096,)
    assert set(np.unique(evaluation["label"])) == {0.0, 1.0}
    assert report["seed"] == 7 and report["rows"] == {"train": 96000, "calibration": 512, "evaluation": 4096}
    assert sig["outputs"] == [{"name": "score", "dataType": "FP32", "dims": [1]}]


def test_ranker_state_dict_loads_into_the_factory_and_scores_probabilities(ranker, ranker_module):
    out, _ = ranker
    source = load(SAMPLES / "ranker" / "model.py", "sample_ranker_source")
    assert set(source.build_model().state_dict()) == set(torch.load(out / "state_dict.pt", weights_only=True))
    with np.load(out / "evaluation.npz") as ev, torch.no_grad():
        score = ranker_module(torch.from_numpy(ev["sparse_ids"][:64]), torch.from_numpy(ev["dense"][:64]))
    assert score.dtype == torch.float32 and score.shape == (64, 1)
    assert bool(((score > 0) & (score < 1)).all())


def test_ranker_held_out_auc(ranker, ranker_module):
    out, report = ranker
    with np.load(out / "evaluation.npz") as ev, torch.no_grad():
        label = ev["label"]
        score = ranker_module(torch.from_numpy(ev["sparse_ids"]), torch.from_numpy(ev["dense"])).numpy()[:, 0]
    pos, neg = score[label == 1], score[label == 0]
    auc = float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                / (len(pos) * len(neg)))
    assert 0.7 < auc < 0.99
    assert auc == pytest.approx(report["heldout"]["auc"], abs=1e-3)
    assert report["heldout"]["auc"] < report["heldout"]["oracle_auc"]


def test_ranker_calibration_evaluation_and_training_rows_are_disjoint(ranker):
    out, report = ranker
    trainer = load(SAMPLES / "ranker" / "train.py", "sample_ranker_train")
    with np.load(out / "calibration.npz") as c, np.load(out / "evaluation.npz") as e:
        cal, ev = set(rows(c["sparse_ids"], c["dense"])), set(rows(e["sparse_ids"], e["dense"]))
    assert len(cal) == 512 and len(ev) == 4096 and not cal & ev
    # The training rows are regenerated from the seed: they share no row with either set.
    total = sum(report["rows"].values())
    ids, dense, _, _ = trainer.synthesize(report["seed"], total, 26, 1000, 13)
    train_rows = set(rows(ids[4096 + 512:], dense[4096 + 512:]))
    assert len(train_rows) == report["rows"]["train"] and not train_rows & (cal | ev)
    assert set(rows(ids[:4096], dense[:4096])) == ev and set(rows(ids[4096:4608], dense[4096:4608])) == cal


def test_ranker_training_is_deterministic(ranker, ranker_module, tmp_path):
    out, report = ranker
    trainer = load(SAMPLES / "ranker" / "train.py", "sample_ranker_train")
    assert trainer.weights_sha256(ranker_module) == report["weights_sha256_by_epoch"][-1], "report = saved weights"
    again = train("ranker", tmp_path, "--epochs", "1")
    assert again["weights_sha256_by_epoch"] == report["weights_sha256_by_epoch"][:1]
    for name in ("calibration.npz", "evaluation.npz"):
        with np.load(out / name) as a, np.load(tmp_path / name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_ranker_exports_to_onnx_within_tolerance(ranker, ranker_module, tmp_path):
    out, _ = ranker
    sig = signature("ranker-build.yaml")
    with np.load(out / "evaluation.npz") as ev:
        inputs = {t["name"]: ev[t["name"]] for t in sig["inputs"]}
    diff = onnx_max_diff(ranker_module, inputs, [t["name"] for t in sig["outputs"]], tmp_path / "ranker.onnx",
                         [slice(0, sig["max_batch_size"]), slice(1000, 1007)])
    assert diff <= ONNX_TOLERANCE


# ---------------------------------------------------------------- encoder

@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    out = tmp_path_factory.mktemp("encoder")
    return out, train("encoder", out)


@pytest.fixture(scope="module")
def encoder_module(encoder):
    out, _ = encoder
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.15: only that is silenced
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        return torch.jit.load(str(out / "model.pt")).eval()


def test_encoder_writes_a_build_source_matching_its_signature(encoder, encoder_module):
    out, report = encoder
    sig = signature("encoder.yaml")
    calibration = check_npz(out / "calibration.npz", sig["inputs"])["token_ids"]
    evaluation = check_npz(out / "evaluation.npz", sig["inputs"])["token_ids"]
    assert calibration.shape == (512, 32) and evaluation.shape == (2048, 32)
    for ids in (calibration, evaluation):
        assert ids.min() >= 0 and ids.max() < 2000
        assert (ids[:, 0] != 0).all(), "no empty rows"
        nonpad = ids != 0
        assert (nonpad[:, :-1] >= nonpad[:, 1:]).all(), "right-padded with 0"
    with torch.no_grad():
        emb = encoder_module(torch.from_numpy(evaluation[:100]))
    assert emb.dtype == torch.float32 and emb.shape == (100, *sig["outputs"][0]["dims"])
    assert torch.allclose(emb.norm(dim=1), torch.ones(100), atol=1e-5)
    assert sig["outputs"][0]["name"] == "embedding" and report["seed"] == 7


def test_encoder_held_out_recall(encoder, encoder_module):
    out, report = encoder
    with np.load(out / "evaluation.npz") as ev, torch.no_grad():
        emb = encoder_module(torch.from_numpy(ev["token_ids"])).numpy()
    queries, products = emb[:1024], emb[1024:]
    sims = queries @ products.T
    recall = float((np.argsort(-sims, axis=1)[:, :10] == np.arange(1024)[:, None]).any(axis=1).mean())
    chance = 10 / 1024
    assert recall > 0.6 and recall > 50 * chance
    assert recall > report["heldout"]["recall_at_10_untrained"] + 0.2, "training helps"
    assert recall == pytest.approx(report["heldout"]["recall_at_10"], abs=2e-3)


def test_encoder_calibration_evaluation_and_training_rows_are_disjoint(encoder):
    out, report = encoder
    trainer = load(SAMPLES / "encoder" / "train.py", "sample_encoder_train")
    with np.load(out / "calibration.npz") as c, np.load(out / "evaluation.npz") as e:
        cal, ev = rows(c["token_ids"]), rows(e["token_ids"])
    assert not set(cal) & set(ev)
    splits = trainer.make_splits(report["seed"], 32, 2000)
    assert rows(np.concatenate([splits["eval_queries"], splits["eval_products"]])) == ev
    assert rows(splits["calibration"]) == cal
    trained = set(rows(splits["train_queries"])) | set(rows(splits["train_products"]))
    assert len(splits["train_queries"]) == report["rows"]["train_pairs"]
    assert not trained & (set(cal) | set(ev))


def test_encoder_training_is_deterministic(encoder, encoder_module, tmp_path):
    out, report = encoder
    trainer = load(SAMPLES / "encoder" / "train.py", "sample_encoder_train")
    assert trainer.weights_sha256(encoder_module) == report["weights_sha256_by_epoch"][-1], "report = saved weights"
    again = train("encoder", tmp_path, "--epochs", "1")
    assert again["weights_sha256_by_epoch"] == report["weights_sha256_by_epoch"][:1]
    for name in ("calibration.npz", "evaluation.npz"):
        with np.load(out / name) as a, np.load(tmp_path / name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_encoder_torchscript_exports_to_onnx_within_tolerance(encoder, encoder_module, tmp_path):
    out, _ = encoder
    sig = signature("encoder.yaml")
    with np.load(out / "evaluation.npz") as ev:
        token_ids = ev["token_ids"]
    # An all-padding row (Triton's zero-filled warmup request) must stay finite.
    token_ids = np.concatenate([token_ids, np.zeros((1, 32), np.int64)])
    diff = onnx_max_diff(encoder_module, {"token_ids": token_ids}, ["embedding"], tmp_path / "encoder.onnx",
                         [slice(0, sig["max_batch_size"]), slice(2040, 2049)])
    assert diff <= ONNX_TOLERANCE
