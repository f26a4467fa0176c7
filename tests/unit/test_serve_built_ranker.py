"""The whole path, for real: train the sample ranker, `peakserve build` it, and serve the published
artifact with the real tritonserver. What Triton answers must match the builder's fp32 reference
within the accuracy gate, over HTTP and gRPC, and Triton must report the model's nv_inference_* metrics.

Locally the server has only the python backend, so the published model.onnx runs through a thin
python-backend model (onnxruntime); the repository, its config (batching, warmup) and the ONNX file
are exactly what the build published.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from peakserve.build.pipeline import run_build
from peakserve.triton import client
from peakserve.triton.python_backend import local_repository
from peakserve.triton.server import LocalTriton
from peakserve.validation import parse_spec

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
        http = client.infer_http(server.http_url, "ranker", inputs, ["score"])["score"]
        grpc = client.infer_grpc(server.grpc_url, "ranker", inputs, ["score"])["score"]
        single = client.infer_http(server.http_url, "ranker", {k: v[:1] for k, v in inputs.items()}, ["score"])
        metrics = client.parse_metrics(client.scrape_metrics(server.metrics_url))

    gate = spec.build.gates.max_abs_diff
    for served in (http, grpc):
        assert served.shape == (ROWS, 1) and served.dtype == np.float32
        assert np.max(np.abs(served - published)) <= 1e-5, "Triton runs exactly the published model"
        assert np.max(np.abs(served - reference)) <= gate, "served scores stay within the accuracy gate"
    # A lone row is answered within the gate too. (int8Dynamic picks activation scales per batch, so a
    # row's score may move slightly with its batch-mates; the gate bounds that drift as well.)
    assert np.max(np.abs(single["score"] - reference[:1])) <= gate
    # The metrics port reports the model's own counters and gauges.
    assert sum(client.metric_values(metrics, "nv_inference_request_success", model="ranker")) >= 3
    assert client.metric_values(metrics, "nv_inference_queue_duration_us", model="ranker")
    assert client.metric_values(metrics, "nv_inference_pending_request_count", model="ranker")


def test_the_build_chose_a_gated_candidate_and_published_its_record(built):
    result, repo = built["result"], built["repo"]
    assert result.candidate in ("int8Dynamic", "int8Static", "fp32")
    if result.candidate != "fp32":
        assert result.figures["speedup"] >= built["spec"].build.gates.min_speedup
        assert result.figures["maxAbsDiff"] <= built["spec"].build.gates.max_abs_diff
    assert result.digest.startswith("sha256:")
    assert (repo / "manifest.json").is_file() and (repo / "ranker" / "config.pbtxt").is_file()
    assert "model_warmup" in (repo / "ranker" / "config.pbtxt").read_text()
