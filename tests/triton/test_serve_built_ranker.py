"""The whole path, for real: train the sample ranker, `peakserve build` it, and serve the published
artifact with the real tritonserver. What Triton answers must match the builder's fp32 reference
within the accuracy gate, over HTTP and gRPC, and Triton must report the model's nv_inference_* metrics.

Locally the server has only the python backend, so the published model.onnx runs through a thin
python-backend model (onnxruntime); the repository, its config (batching, warmup) and the ONNX file
are exactly what the build published.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from peakserve.builder import accuracy, speed
from peakserve.builder.pipeline import run_build
from peakserve.loadgen import client
from peakserve_harness.triton import metrics_text
from peakserve_harness.triton.python_backend import local_repository
from peakserve_harness.triton.server import LocalTriton
from peakserve.api.validation import parse_spec

ROOT = Path(__file__).resolve().parents[2]
ROWS = 64
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sample ranker trained from scratch, built for CPU serving, published under out/<hash>."""
    root = tmp_path_factory.mktemp("ranker")
    source = root / "source"
    subprocess.run([sys.executable, str(ROOT / "model_repo/ranker/train.py"), "--out", str(source)],
                   check=True, capture_output=True, timeout=240)
    body = yaml.safe_load((ROOT / "examples/ranker-build.yaml").read_text())
    spec = parse_spec(body["spec"])
    result = run_build(spec, source, root / "out", quiet=True)
    assert result.phase == "Succeeded", result.message
    return {"spec": spec, "source": source, "result": result, "repo": root / "out" / result.artifact}


def fp32_reference(source: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The builder's reference: the trained torch model itself, in fp32."""
    factory = importlib.util.spec_from_file_location("ranker_factory", source / "model.py")
    module = importlib.util.module_from_spec(factory)
    factory.loader.exec_module(module)
    model = module.build_model()
    model.load_state_dict(torch.load(source / "state_dict.pt", weights_only=True))
    with torch.no_grad():
        return model.eval()(*(torch.from_numpy(inputs[n]) for n in ("sparse_ids", "dense"))).numpy()


def test_real_triton_serves_the_built_ranker_within_the_gate(built, triton_installed, tmp_path):
    spec, repo = built["spec"], built["repo"]
    evaluation = np.load(built["source"] / "evaluation.npz")
    inputs = {"sparse_ids": evaluation["sparse_ids"][:ROWS], "dense": evaluation["dense"][:ROWS]}
    reference = fp32_reference(built["source"], inputs)
    published = ort.InferenceSession(str(repo / "ranker" / "1" / "model.onnx"),
                                     providers=["CPUExecutionProvider"]).run(["score"], inputs)[0]

    with LocalTriton(local_repository(repo, tmp_path / "repo"), workdir=tmp_path / "server") as server:
        server.wait_ready(timeout=120)
        # model_warmup ran before the model reported ready: readiness means warm.
        stats = client.model_stats(server.http_url, "ranker")
        assert stats["inference_stats"]["success"]["count"] >= 1
        http = client.infer(server.http_url, "ranker", inputs, ["score"])["score"]
        grpc = client.infer(server.grpc_url, "ranker", inputs, ["score"])["score"]
        single = client.infer(server.http_url, "ranker", {k: v[:1] for k, v in inputs.items()}, ["score"])
        metrics = metrics_text.parse_metrics(metrics_text.scrape_metrics(server.metrics_url))

    gate = spec.build.gates.max_abs_diff
    for served in (http, grpc):
        assert served.shape == (ROWS, 1) and served.dtype == np.float32
        assert np.max(np.abs(served - published)) <= 1e-5, "Triton runs exactly the published model"
        assert np.max(np.abs(served - reference)) <= gate, "served scores stay within the accuracy gate"
    # A lone row is answered within the gate too. (int8Dynamic picks activation scales per batch, so a
    # row's score may move slightly with its batch-mates; the gate bounds that drift as well.)
    assert np.max(np.abs(single["score"] - reference[:1])) <= gate
    # The metrics port reports the model's own counters and gauges.
    assert sum(metrics_text.metric_values(metrics, "nv_inference_request_success", model="ranker")) >= 3
    assert metrics_text.metric_values(metrics, "nv_inference_queue_duration_us", model="ranker")
    assert metrics_text.metric_values(metrics, "nv_inference_pending_request_count", model="ranker")


def gate_failures(spec, entry: dict) -> list[str]:
    """The spec's gates, checked again on the figures the build recorded for one candidate."""
    if "speedFigures" not in entry:  # not made, or failed accuracy: it was never timed
        return [entry.get("reason") or "not timed"]
    per_batch = {int(k.removeprefix("speedupB")): v for k, v in entry["speedFigures"].items()
                 if k.startswith("speedupB")}
    gates = spec.build.gates
    return (accuracy.accuracy_failures(spec.build.task, entry["accuracy"], gates)
            + speed.speed_failures(per_batch, gates.min_speedup, gates.min_batch_speedup))


def test_the_build_chose_a_gated_candidate_and_published_its_record(built):
    spec, result, repo = built["spec"], built["result"], built["repo"]
    tried = list(spec.build.candidates)
    report = json.loads((repo / "manifest.json").read_text())["candidates"]
    assert sorted(report) == sorted(tried)
    failures = {name: gate_failures(spec, report[name]) for name in tried}
    passed = {name: report[name]["speedFigures"]["speedup"] for name in tried if not failures[name]}
    # The fastest candidate whose figures pass the spec's gates is served; fp32 when none does
    # (allowFp32Fallback), and the reason says which. Every assertion runs on either outcome.
    assert result.candidate == max(passed, key=passed.get, default="fp32"), failures
    assert result.reason == ("GatesPassed" if passed else "Fp32Fallback"), result.message
    assert result.figures["speedup"] == pytest.approx(max(passed.values(), default=1.0), rel=1e-4)
    # every candidate tried and not served is rejected with its reason (all of them on a fallback)
    assert sorted(result.rejected) == sorted(set(tried) - {result.candidate})
    assert all(reason.strip() for reason in result.rejected.values()), result.rejected
    assert result.digest.startswith("sha256:")
    assert (repo / "manifest.json").is_file() and (repo / "ranker" / "config.pbtxt").is_file()
    assert "model_warmup" in (repo / "ranker" / "config.pbtxt").read_text()
