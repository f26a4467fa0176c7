"""peakserve.loadgen against the real tritonserver (python backend, CPU) serving a tiny MLP.

The model and the servers are made as in test_triton_local.py (a torch MLP exported to ONNX,
its production config rendered from a spec, served through local_repository), with a short
dynamic-batching queue delay so that a lone request is not held back. Every run is bounded by
time (about a second) and most by count too.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_triton_local import FEATURES, MODEL, SPEC, write_built

from peakserve.loadgen import cli as bench_cli
from peakserve.loadgen import find_capacity, run_load
from peakserve_harness.triton import metrics_text
from peakserve_harness.triton.python_backend import local_repository
from peakserve_harness.triton.server import LocalTriton

pytestmark = pytest.mark.timeout(120)

FAST_SPEC = copy.deepcopy(SPEC)
FAST_SPEC["serving"]["dynamicBatching"] = {"maxQueueDelayMicroseconds": 500}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loadgen")
    return local_repository(write_built(root, spec=FAST_SPEC), root / "serving")


def _start(repo: Path, n: int) -> list[LocalTriton]:
    servers = [LocalTriton(repo) for _ in range(n)]
    try:
        for s in servers:  # they start in parallel, then each is awaited
            s.start()
        for s in servers:
            s.wait_ready(60)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


@pytest.fixture(scope="module")
def servers(triton_installed, repo):  # noqa: F811
    started = _start(repo, 2)
    yield started
    for s in started:  # Triton takes seconds to exit: signal both, then wait for each
        s.terminate()
    for s in started:
        s.stop()


def successes(server: LocalTriton) -> float:
    metrics = metrics_text.parse_metrics(metrics_text.scrape_metrics(server.metrics_url))
    return sum(metrics_text.metric_values(metrics, "nv_inference_request_success", model=MODEL))


def served_since(server: LocalTriton, before: float, expected: int) -> float:
    """The server's successes since ``before``, polled briefly until they reach ``expected``
    (the counter may be updated just after the response went out)."""
    deadline = time.monotonic() + 3
    while True:
        delta = successes(server) - before
        if delta >= expected or time.monotonic() > deadline:
            return delta
        time.sleep(0.05)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_fixed_concurrency_stops_at_max_requests_and_matches_the_server_count(servers):
    a = servers[0]
    before = successes(a)
    t0 = time.monotonic()
    r = run(run_load([a.grpc_url], MODEL, concurrency=4, duration=20, max_requests=300,
                     warmup=0.3))
    wall = time.monotonic() - t0
    assert r.stop_reason == "max_requests" and wall < 10
    assert (r.sent, r.completed, r.errors, r.dropped) == (300, 300, 0, 0)
    assert r.warmup["completed"] > 0 and r.total["completed"] == 300 + r.warmup["completed"]
    assert served_since(a, before, r.total["completed"]) == r.total["completed"]
    assert r.throughput_rps > 0 and r.latency_ms == r.service_ms
    assert 0 < r.latency_ms["p50"] <= r.latency_ms["p90"] <= r.latency_ms["p99"] <= r.latency_ms["max"]


def test_fixed_concurrency_over_http_stops_at_the_duration(servers):
    a = servers[0]
    before = successes(a)
    t0 = time.monotonic()
    r = run(run_load([a.http_url], MODEL, concurrency=3, duration=1.0, warmup=0.5, batch_rows=8))
    wall = time.monotonic() - t0
    assert r.stop_reason == "duration" and 1.0 <= r.elapsed_s < 1.3 and wall < 3.5
    assert r.errors == 0 and r.completed > 50
    assert r.rows_per_s == pytest.approx(8 * r.throughput_rps, rel=1e-3)
    assert served_since(a, before, r.total["completed"]) == r.total["completed"]
    assert [p["t"] for p in r.series] == [0, 1]  # 0.5 s warmup + 1 s, by the second
    assert sum(p["completed"] for p in r.series) == r.total["completed"]
    assert r.endpoints[a.http_url].protocol == "http"


def test_fixed_rate_achieves_the_asked_rate(servers):
    a = servers[0]
    r = run(run_load([a.grpc_url], MODEL, mode="rate", rate=200, duration=2.0, warmup=0.5))
    assert r.stop_reason == "duration" and r.dropped == 0 and r.errors == 0
    assert r.sent == 400 and r.offered_rps == pytest.approx(200, rel=0.01)
    assert r.throughput_rps == pytest.approx(200, rel=0.1)
    # latency from the intended start includes the generator's own lateness
    assert r.latency_ms["p50"] >= r.service_ms["p50"] and r.latency_ms["max"] >= r.service_ms["max"]
    assert r.send_lag_ms["p50"] < 20
    (second,) = [p for p in r.series if p["t"] == 1]  # a whole second after warmup
    assert 190 <= second["sent"] <= 210 and 190 <= second["completed"] <= 210, r.series


def test_two_servers_get_balanced_load(servers):
    a, b = servers
    before = {s.grpc_url: successes(s) for s in servers}
    r = run(run_load([a.grpc_url, b.grpc_url], MODEL, concurrency=4, duration=1.5))
    counts = [r.endpoints[s.grpc_url].completed for s in servers]
    mean = sum(counts) / 2
    assert r.errors == 0 and all(abs(c - mean) <= 0.2 * mean for c in counts), counts
    for s in servers:
        done = r.endpoints[s.grpc_url].completed
        assert served_since(s, before[s.grpc_url], done) == done


def test_a_stopped_server_is_counted_and_skipped_without_crashing(servers, repo):
    a = servers[0]
    (doomed,) = _start(repo, 1)
    try:
        stopper = threading.Timer(0.8, doomed.terminate)  # SIGTERM mid-run
        stopper.start()
        r = run(run_load([a.grpc_url, doomed.grpc_url], MODEL, concurrency=4, duration=2.5,
                         skip_after=3, skip_seconds=0.5))
        stopper.join()
    finally:
        doomed.stop()
    dead = r.endpoints[doomed.grpc_url]
    alive = r.endpoints[a.grpc_url]
    assert dead.completed > 0 and dead.errors > 0 and dead.skips >= 1
    assert alive.errors == 0 and alive.completed > dead.completed
    assert r.errors == dead.errors == sum(r.errors_by_kind.values())
    # a stopping Triton first unloads the model (NOT_FOUND), then stops listening (UNAVAILABLE)
    assert set(r.errors_by_kind) <= {"NOT_FOUND", "UNAVAILABLE", "CANCELLED"}, r.errors_by_kind
    assert r.series[-1]["completed"] > 0  # the live server kept answering to the end


def test_endpoints_callable_adds_a_server_while_running(servers):
    a, b = servers
    t0 = time.monotonic()

    def endpoints():
        return [a.grpc_url] if time.monotonic() - t0 < 0.6 else [a.grpc_url, b.grpc_url]

    r = run(run_load(endpoints, MODEL, concurrency=2, duration=1.5, refresh_interval=0.2))
    assert r.errors == 0
    assert r.endpoints[a.grpc_url].completed > r.endpoints[b.grpc_url].completed > 0


def test_capacity_search_terminates_with_a_positive_figure(servers):
    a = servers[0]
    steps = []
    c = run(find_capacity([a.grpc_url], MODEL, slo_ms=1000, start=1, factor=2, max_steps=3,
                          step_seconds=0.6, step_warmup=0.2, on_step=steps.append))
    assert 1 <= len(c.steps) <= 3 and steps == c.steps
    assert c.capacity_rps > 0 and c.capacity_rps == max(s.throughput_rps for s in c.steps)
    assert c.per_replica_rps == c.capacity_rps and c.best_level in (1, 2, 4)
    assert c.lower_bound == c.stop_reason.startswith("reached max_steps")
    tight = run(find_capacity([a.grpc_url], MODEL, slo_ms=0.001, max_steps=3, step_seconds=0.3,
                              step_warmup=0))
    assert len(tight.steps) == 1 and tight.capacity_rps == 0 and "> SLO" in tight.stop_reason
    assert not tight.lower_bound


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="peakserve")
    bench_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    return args.func(args)


def test_cli_writes_json(servers, tmp_path, capsys):
    a, b = servers
    data = tmp_path / "real.npz"
    x = np.random.default_rng(0).normal(size=(40, FEATURES)).astype(np.float32)
    np.savez(data, x=x, label=np.zeros(40))
    out = tmp_path / "bench.json"
    rc = _cli(["--url", a.grpc_url, "--url", b.http_url, "--model", MODEL, "--mode", "rate",
               "--rate", "100", "--duration", "1", "--warmup", "0.2", "--batch", "4",
               "--data", str(data), "--json", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert rc == 0, printed
    result = json.loads(out.read_text())
    assert result["kind"] == "bench" and result["mode"] == "rate" and result["batch_rows"] == 4
    assert result["completed"] == 100 and result["rows_per_s"] == pytest.approx(400, rel=0.1)
    assert set(result["endpoints"]) == {a.grpc_url, b.http_url}
    assert {"p50", "p90", "p99", "max"} <= set(result["latency_ms"]) and result["series"]
    assert "throughput" in printed.out and printed.err == ""

    cap = tmp_path / "capacity.json"
    rc = _cli(["--url", a.grpc_url, "--model", MODEL, "--capacity", "--slo-ms", "1000",
               "--max-steps", "2", "--duration", "0.4", "--warmup", "0", "--json", str(cap)])
    printed = capsys.readouterr()
    assert rc == 0 and "capacity" in printed.out and "[bench]" in printed.err
    capacity = json.loads(cap.read_text())
    assert capacity["kind"] == "capacity" and capacity["capacity_rps"] > 0
    assert len(capacity["steps"]) == 2

    assert _cli(["--url", a.grpc_url, "--model", MODEL, "--mode", "rate"]) == 2
    assert _cli(["--url", a.grpc_url, "--model", "nope", "--duration", "1", "--quiet"]) == 2
    assert "nope" in capsys.readouterr().err
