"""The real tritonserver (nvidia-pytriton's binary, python backend, CPU) serving a built repository.

A torch MLP is exported to ONNX with a dynamic batch dimension, its production config is rendered
from a spec (KIND_GPU x1, dynamic batching, max_batch_size 64, warmup), the repository is made
servable with local_repository, and the server must load it, warm it up, answer HTTP and gRPC
like onnxruntime on the same model.onnx, batch concurrent requests, report Prometheus metrics, and
leave no process behind. Requests go through peakserve.loadgen.client (what `peakserve bench` uses),
which must answer alike over both protocols and never go through a proxy from the environment. The server comes from `make tools` (python -m peakserve_harness.triton.install);
if it is missing the tests install it, and skip only when that is impossible because the network
is down.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.utils import InferenceServerException

from peakserve.loadgen import client
from peakserve.render.triton_config import render_config_pbtxt
from peakserve_harness.triton import metrics_text
from peakserve_harness.triton.python_backend import local_repository
from peakserve_harness.triton.server import LocalTriton, TritonStartError
from peakserve.api.validation import parse_spec

pytestmark = pytest.mark.timeout(180)

MODEL = "mlp"
FEATURES = 13
SPEC = {
    "model": {
        "name": MODEL, "version": 1, "uri": f"pvc://model-store/{MODEL}/1", "format": "onnx",
        "maxBatchSize": 64,
        "inputs": [{"name": "x", "dataType": "FP32", "dims": [FEATURES]}],
        "outputs": [{"name": "score", "dataType": "FP32", "dims": [1]}],
    },
    "serving": {
        "instanceGroups": [{"kind": "GPU", "count": 1}],
        # long enough that requests sent together are batched together
        "dynamicBatching": {"maxQueueDelayMicroseconds": 50_000},
    },
}


# ------------------------------------------------------------------------------------ fixtures

def export_mlp(path: Path, seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 1)).eval()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(mlp, (torch.zeros(2, FEATURES),), str(path), input_names=["x"],
                          output_names=["score"], dynamic_axes={"x": {0: "batch"},
                                                                 "score": {0: "batch"}},
                          dynamo=False)


def write_built(root: Path, spec: dict = SPEC, onnx: bytes | None = None) -> Path:
    """A built repository as the model builder lays it out."""
    built = root / "built"
    version = built / MODEL / "1"
    version.mkdir(parents=True)
    (built / "manifest.json").write_text("{}\n")
    (built / MODEL / "config.pbtxt").write_text(render_config_pbtxt(parse_spec(spec)))
    if onnx is None:
        export_mlp(version / "model.onnx")
    else:
        (version / "model.onnx").write_bytes(onnx)
    return built


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return write_built(tmp_path_factory.mktemp("triton"))


@pytest.fixture(scope="module")
def reference(built):
    session = ort.InferenceSession(str(built / MODEL / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return lambda x: session.run(["score"], {"x": x})[0]


@pytest.fixture(scope="module")
def local_repo(built, tmp_path_factory) -> Path:
    return local_repository(built, tmp_path_factory.mktemp("triton") / "serving")


@pytest.fixture(scope="module")
def server(triton_installed, local_repo):
    """One server for the module, with what it reported right after it became ready."""
    with LocalTriton(local_repo) as s:
        t0 = time.monotonic()
        s.wait_ready(60)
        s.started_in = time.monotonic() - t0
        print(f"\ntritonserver ready in {s.started_in:.2f}s", file=sys.stderr)
        s.stats_at_ready = client.model_stats(s.http_url, MODEL)
        s.requests_sent = 0
        yield s


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)


def group_processes(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of the processes in a process group, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            found.append((int(entry), fields[0]))
    return found


# ------------------------------------------------------------------------------------ tests

def test_model_is_ready_and_warmed_up_with_the_production_config(server, local_repo):
    assert server.is_ready()
    assert client.model_ready(server.http_url, MODEL)
    assert client.model_ready(server.http_url, MODEL, version="1")
    # the warmup request ran before the server said ready (Triton counts it in the stats)
    warm = server.stats_at_ready
    assert warm["inference_stats"]["success"]["count"] == 1
    assert warm["execution_count"] == 1 and warm["inference_count"] == 1
    config = client.model_config(server.http_url, MODEL)
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 64
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 1)]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 50_000
    assert config["version_policy"] == {"specific": {"versions": [1]}}
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == \
        [("x", "TYPE_FP32", [FEATURES])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == \
        [("score", "TYPE_FP32", [1])]
    (warmup,) = config["model_warmup"]
    assert warmup["name"] == "zero" and warmup["batch_size"] == 1
    assert warmup["inputs"]["x"]["zero_data"] and warmup["inputs"]["x"]["dims"] == [FEATURES]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("batch", [8, 1])
def test_inference_matches_onnxruntime(server, reference, protocol, batch):
    x = rows(batch, seed=batch)
    url = server.http_url if protocol == "http" else server.grpc_url
    out = client.infer(url, MODEL, {"x": x}, ["score"], protocol=protocol)
    server.requests_sent += 1
    assert out["score"].dtype == np.float32 and out["score"].shape == (batch, 1)
    np.testing.assert_allclose(out["score"], reference(x), rtol=0, atol=1e-5)


def settled_stats(server, requests: int) -> dict:
    """The model's statistics once they count ``requests`` successes (Triton updates them just
    after the responses went out), or after 3 s."""
    deadline = time.monotonic() + 3
    while True:
        stats = client.model_stats(server.http_url, MODEL)
        if stats["inference_stats"]["success"]["count"] >= requests or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_concurrent_requests_are_batched_and_split_back(server, reference):
    before = client.model_stats(server.http_url, MODEL)
    inputs = [rows(n, seed=100 + n) for n in (1, 2, 3, 4, 5, 6)]

    async def together():  # one gRPC channel, as `peakserve bench` sends them
        c = client.open_client("grpc", server.grpc_url, connections=1, timeout_s=30)
        try:
            return await asyncio.gather(*(c.infer(MODEL, c.prepare({"x": x}, {}), "", 30, ["score"])
                                          for x in inputs))
        finally:
            await c.close()

    results = asyncio.run(together())
    server.requests_sent += len(inputs)
    for result, x in zip(results, inputs):
        np.testing.assert_allclose(result.as_numpy("score"), reference(x), rtol=0, atol=1e-5)
    after = settled_stats(server, before["inference_stats"]["success"]["count"] + len(inputs))
    executions = after["execution_count"] - before["execution_count"]
    assert 1 <= executions < len(inputs), "the dynamic batcher merged none of the requests"


def test_both_protocols_answer_alike(server):
    for url in (server.http_url, server.grpc_url):
        assert client.model_ready(url, MODEL) and client.model_ready(url, MODEL, version="1")
        assert not client.model_ready(url, MODEL, version="7")
        assert not client.model_ready(url, "nope")
    # the gRPC protobuf comes back as the HTTP API's JSON: same keys, defaults, numbers
    assert client.model_config(server.grpc_url, MODEL) == client.model_config(server.http_url, MODEL)
    assert client.model_stats(server.grpc_url, MODEL) == client.model_stats(server.http_url, MODEL)
    assert client.model_stats(server.grpc_url, MODEL, version="1")["version"] == "1"
    for url in (server.http_url, server.grpc_url):
        with pytest.raises(InferenceServerException, match="nope"):
            client.model_stats(url, "nope")
        with pytest.raises(InferenceServerException, match="nope"):
            client.infer(url, "nope", {"x": rows(1, seed=0)}, ["score"])


def test_a_proxy_from_the_environment_is_not_used(server, reference, monkeypatch):
    dead = "http://127.0.0.1:9"  # discard: nothing listens there
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "grpc_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("no_proxy", "NO_PROXY", "no_grpc_proxy"):
        monkeypatch.delenv(name, raising=False)
    x = rows(2, seed=11)
    for url in (server.http_url, server.grpc_url):
        np.testing.assert_allclose(client.infer(url, MODEL, {"x": x}, ["score"])["score"],
                                   reference(x), rtol=0, atol=1e-5)
        assert client.model_ready(url, MODEL)
    server.requests_sent += 2


def test_metrics_report_the_model(server):
    for i in range(3):
        client.infer(server.http_url, MODEL, {"x": rows(2, seed=i)}, ["score"])
    server.requests_sent += 3
    metrics = metrics_text.parse_metrics(metrics_text.scrape_metrics(server.metrics_url))
    (success,) = metrics_text.metric_values(metrics, "nv_inference_request_success", model=MODEL)
    assert success >= server.requests_sent + 1  # + the warmup
    (queue,) = metrics_text.metric_values(metrics, "nv_inference_queue_duration_us", model=MODEL)
    assert queue > 0
    (pending,) = metrics_text.metric_values(metrics, "nv_inference_pending_request_count", model=MODEL)
    assert pending == 0
    assert metrics_text.metric_values(metrics, "nv_inference_request_success",
                                model=MODEL, version="1") == [success]


def test_a_second_server_at_once_then_stop_leaves_no_process(server, built, reference, tmp_path):
    # its own serving copy, with the intra-op threads model parameter
    repo = local_repository(built, tmp_path / "serving", intra_op_threads=2)
    with LocalTriton(repo) as other:
        other.wait_ready(60)
        assert "intra_op_threads=2" in other.log_text()
        assert {other.http_url, other.grpc_url, other.metrics_url}.isdisjoint(
            {server.http_url, server.grpc_url, server.metrics_url})
        x = rows(4, seed=7)
        np.testing.assert_allclose(client.infer(other.grpc_url, MODEL, {"x": x},
                                                ["score"])["score"], reference(x), atol=1e-5)
        pgid = other.pid
        running = [pid for pid, state in group_processes(pgid) if state != "Z"]
        assert pgid in running and len(running) >= 2, "expected the server and its model's stub"
        assert server.is_ready()  # the module's server is unaffected
    assert other.returncode == 0
    assert not other.running
    deadline = time.monotonic() + 5
    while group_processes(pgid) and time.monotonic() < deadline:  # stubs' zombies await init
        time.sleep(0.05)
    assert [p for p in group_processes(pgid) if p[1] != "Z"] == []
    assert server.is_ready()


@pytest.mark.parametrize("broken", ["garbage onnx", "config does not match the graph"])
def test_a_model_that_cannot_load_fails_wait_ready_with_the_log_tail(triton_installed, tmp_path,
                                                                    broken):
    if broken == "garbage onnx":
        built = write_built(tmp_path, onnx=b"this is not an onnx model")
        expected = "model.onnx"
    else:
        spec = {**SPEC, "model": {**SPEC["model"],
                                  "inputs": [{"name": "x", "dataType": "FP32", "dims": [12]}]}}
        built = write_built(tmp_path, spec=spec)
        expected = "config dims [12] do not match the ONNX shape"
    server = LocalTriton(local_repository(built, tmp_path / "serving"),
                         workdir=tmp_path / "server")
    with server:
        with pytest.raises(TritonStartError) as failure:
            server.wait_ready(60)
        assert not server.running
    message = str(failure.value)
    assert "exited with code" in message and str(server.log_path) in message
    assert f"failed to load '{MODEL}'" in message and expected in message
    assert message.endswith(server.log_tail())
    assert "error: creating server: Internal - failed to load all models" in message
