"""peakserve.loadgen without a server: statistics, request data, endpoints, the client's gRPC JSON and
synchronous facade, and the runner's scheduling against fake in-process clients (fixed rate, drops,
skipping, endpoint refresh)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from peakserve.loadgen import client as client_mod
from peakserve.loadgen import endpoints as endpoints_mod
from peakserve.loadgen.capacity import find_capacity, judge
from peakserve.loadgen.data import (DataError, RequestData, Signature, TensorSpec, load_npz,
                                    random_inputs)
from peakserve.loadgen.client import Client, error_kind, parse_endpoint
from peakserve.loadgen.endpoints import EndpointPool
from peakserve.loadgen.runner import run_load
from peakserve.loadgen.stats import (Drop, Sample, latency_summary, percentile, summarize,
                                     time_series)

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------------------------ stats

def test_percentiles_are_nearest_rank():
    values = np.arange(1, 101, dtype=float)  # 1..100
    np.random.default_rng(0).shuffle(values)
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4], 51) == 3
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary():
    s = latency_summary([10.0] * 98 + [50.0, 1000.0])
    assert s == {"count": 100, "mean": 20.3, "p50": 10.0, "p90": 10.0, "p99": 50.0, "max": 1000.0}
    empty = latency_summary([])
    assert empty["count"] == 0 and empty["p99"] is None and empty["max"] is None


def _s(intended, done, ep="a", error=None, sent=None):
    return Sample(intended, intended if sent is None else sent, done, ep, error)


def test_time_series_buckets_by_intended_start_and_completion():
    t0 = 100.0
    samples = [
        _s(100.1, 100.2),                    # sent and done in bucket 0
        _s(100.9, 101.3),                    # sent in 0, done in 1
        _s(101.5, 101.6, error="UNAVAILABLE"),
        _s(101.0, 101.01),                   # exactly on the 1 s edge: bucket 1
        _s(99.5, 100.5),                     # sent before the origin: only its completion counts
        _s(102.4, 102.5),                    # done exactly at `end`: the last bucket
    ]
    drops = [Drop(100.5, "inflight_cap"), Drop(102.1, "no_endpoint"), Drop(103.0, "x")]
    series = time_series(samples, drops, t0, 102.5)
    assert [p["t"] for p in series] == [0, 1, 2]
    assert [p["sent"] for p in series] == [2, 2, 1]
    assert [p["completed"] for p in series] == [2, 2, 1]
    assert [p["errors"] for p in series] == [0, 1, 0]
    assert [p["dropped"] for p in series] == [1, 0, 1]
    assert series[0]["p99_ms"] == 1000.0  # 99.5 -> 100.5: latency from the intended start
    assert series[1]["p99_ms"] == 400.0
    assert time_series([], [], 5.0, 5.0) == []
    half = time_series([_s(0.1, 0.2), _s(0.3, 0.45)], [], 0.0, 0.5, resolution=0.25)
    assert [p["completed"] for p in half] == [1, 1]


def test_summarize_excludes_warmup_and_counts_per_endpoint():
    t0, measure_from, stop = 0.0, 1.0, 3.0
    samples = [_s(0.5, 0.6, "a"),                                   # warmup
               _s(1.0, 1.01, "a"), _s(1.5, 1.52, "b"), _s(2.0, 2.1, "a", sent=2.05),
               _s(2.5, 2.6, "b", error="timeout"), _s(2.9, 3.2, "a")]
    drops = [Drop(0.9, "inflight_cap"), Drop(2.2, "inflight_cap")]
    r = summarize(samples, drops, t0=t0, measure_from=measure_from, stop_at=stop,
                  endpoints={"a": "grpc", "b": "http"}, skips={"b": 1},
                  model="m", mode="rate", protocol="grpc", rate=3.0, concurrency=None,
                  arrival="constant", batch_rows=4, warmup_s=1.0, duration_s=2.0,
                  max_requests=None, stop_reason="duration")
    assert (r.sent, r.completed, r.errors, r.dropped) == (5, 4, 1, 1)
    assert r.elapsed_s == pytest.approx(2.2)  # to the last completion, after the stop
    assert r.throughput_rps == pytest.approx(4 / 2.2, abs=1e-3)
    assert r.rows_per_s == pytest.approx(16 / 2.2, abs=1e-3)
    assert r.offered_rps == 3.0  # (5 sent + 1 dropped) / 2 s
    assert r.errors_by_kind == {"timeout": 1} and r.dropped_by_kind == {"inflight_cap": 1}
    assert r.latency_ms["max"] == pytest.approx(300.0)
    assert r.service_ms["p50"] == pytest.approx(20.0)
    assert r.send_lag_ms["max"] == pytest.approx(50.0)
    a, b = r.endpoints["a"], r.endpoints["b"]
    assert (a.sent, a.completed, a.errors, a.protocol) == (3, 3, 0, "grpc")
    assert (b.sent, b.completed, b.errors, b.skips) == (2, 1, 1, 1)
    assert b.errors_by_kind == {"timeout": 1}
    assert r.warmup == {"sent": 1, "completed": 1, "errors": 0, "dropped": 1}
    assert r.total == {"sent": 6, "completed": 5, "errors": 1, "dropped": 2}
    assert len(r.series) == 4  # 0..3.2 s from t0
    d = r.to_dict()
    assert d["endpoints"]["a"]["sent"] == 3 and "series" in d
    assert "series" not in r.to_dict(series=False)
    assert not r.ok()


# ------------------------------------------------------------------------------------ data

HTTP_CONFIG = {"name": "m", "max_batch_size": 8,
               "input": [{"name": "ids", "data_type": "TYPE_INT64", "dims": [3]},
                         {"name": "x", "data_type": "TYPE_FP32", "dims": [2, -1]},
                         {"name": "flag", "data_type": "TYPE_BOOL", "dims": [1]},
                         {"name": "text", "data_type": "TYPE_STRING", "dims": [1]}],
               "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}
# what the gRPC client's as_json gives: wrapped, int64 dims as strings, zero values left out
GRPC_CONFIG = {"config": {"name": "n", "input": [{"name": "x", "data_type": "TYPE_FP16",
                                                  "dims": ["4"]}],
                          "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["1"]}]}}


def test_signature_from_http_and_grpc_configs():
    sig = Signature.from_config(HTTP_CONFIG)
    assert sig.max_batch_size == 8 and sig.outputs == ("y",)
    assert sig.inputs == (TensorSpec("ids", "INT64", (3,)), TensorSpec("x", "FP32", (2, -1)),
                          TensorSpec("flag", "BOOL", (1,)), TensorSpec("text", "BYTES", (1,)))
    g = Signature.from_config(GRPC_CONFIG, "n")
    assert g.max_batch_size == 0 and g.inputs == (TensorSpec("x", "FP16", (4,)),)
    with pytest.raises(DataError, match="no inputs"):
        Signature.from_config({"name": "z", "input": []})


def test_random_inputs_follow_the_signature():
    sig = Signature.from_config(HTTP_CONFIG)
    arrays = random_inputs(sig, 5, np.random.default_rng(0), variable_dim=7, int_range=(0, 10))
    assert arrays["ids"].shape == (5, 3) and arrays["ids"].dtype == np.int64
    assert 0 <= arrays["ids"].min() and arrays["ids"].max() < 10
    assert arrays["x"].shape == (5, 2, 7) and arrays["x"].dtype == np.float32
    assert arrays["flag"].dtype == bool and arrays["text"].dtype == object
    unbatched = Signature.from_config(GRPC_CONFIG, "n")
    one = random_inputs(unbatched, 1, np.random.default_rng(0))
    assert one["x"].shape == (4,) and one["x"].dtype == np.float16
    with pytest.raises(DataError, match="max_batch_size 0"):
        unbatched.check_batch(2)
    with pytest.raises(DataError, match="max_batch_size 8"):
        sig.check_batch(9)
    data = RequestData(sig, 2, seed=3)
    np.testing.assert_array_equal(data(4)["x"], RequestData(sig, 2, seed=3)(4)["x"])
    assert not np.array_equal(data(4)["x"], data(5)["x"])


def test_npz_inputs_are_checked_cast_and_sliced_round_robin(tmp_path):
    sig = Signature("m", (TensorSpec("ids", "INT32", (3,)), TensorSpec("x", "FP32", (2,))), ("y",), 8)
    path = tmp_path / "real.npz"
    ids = np.arange(15, dtype=np.int64).reshape(5, 3)
    x = np.arange(10, dtype=np.float64).reshape(5, 2)
    np.savez(path, ids=ids, x=x, label=np.zeros(5))
    source = load_npz(path, sig)
    assert set(source) == {"ids", "x"} and source["ids"].dtype == np.int32
    assert source["x"].dtype == np.float32
    data = RequestData(sig, 2, source)
    np.testing.assert_array_equal(data(0)["ids"], ids[0:2])
    np.testing.assert_array_equal(data(2)["ids"], ids[[4, 0]])  # rows 4, 5 -> wrap to 0
    np.savez(path, ids=ids)
    with pytest.raises(DataError, match=r"no array for input\(s\) \['x'\]"):
        load_npz(path, sig)
    np.savez(path, ids=ids, x=np.zeros((5, 3)))
    with pytest.raises(DataError, match="shape"):
        load_npz(path, sig)
    np.savez(path, ids=np.zeros((5, 3)), x=x)  # float ids: not a safe cast
    with pytest.raises(DataError, match="the model wants INT32"):
        load_npz(path, sig)
    np.savez(path, ids=ids[:4], x=x)
    with pytest.raises(DataError, match="row counts"):
        load_npz(path, sig)


# ------------------------------------------------------------------------------------ endpoints

def test_parse_endpoint():
    assert parse_endpoint("127.0.0.1:8001") == endpoints_mod.Target("127.0.0.1:8001", "grpc",
                                                                    "127.0.0.1:8001")
    assert parse_endpoint("host:8000", "http").protocol == "http"
    t = parse_endpoint("http://10.0.0.5:8000/")
    assert (t.protocol, t.address, t.url) == ("http", "10.0.0.5:8000", "http://10.0.0.5:8000/")
    assert parse_endpoint("grpc://svc.ns:8001", "http").protocol == "grpc"
    for bad in ("https://h:1", "h", "h:port", "http://h:1/v2", ":80"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_error_kinds():
    from tritonclient.utils import InferenceServerException

    assert error_kind(InferenceServerException("x", status="StatusCode.UNAVAILABLE")) == "UNAVAILABLE"
    assert error_kind(InferenceServerException("x", status="StatusCode.DEADLINE_EXCEEDED")) == "timeout"
    assert error_kind(InferenceServerException("x", status="400")) == "HTTP 400"
    assert error_kind(asyncio.TimeoutError()) == "timeout"
    assert error_kind(ConnectionRefusedError()) == "connection"
    assert error_kind(KeyError("k")) == "KeyError"


def test_grpc_protobuf_becomes_the_http_json():
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(
        name="m", input=[mc.ModelInput(name="x", data_type=mc.TYPE_FP32, dims=[3, -1])],
        dynamic_batching=mc.ModelDynamicBatching(
            max_queue_delay_microseconds=100,
            priority_queue_policy={2: mc.ModelQueuePolicy(default_timeout_microseconds=5)}),
        parameters={"k": mc.ModelParameter(string_value="v")})
    got = client_mod._as_json(config)
    assert got["name"] == "m" and got["max_batch_size"] == 0 and got["output"] == []  # defaults
    assert got["input"][0]["dims"] == [3, -1] and got["input"][0]["data_type"] == "TYPE_FP32"
    batching = got["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 100  # int64: a number, not "100"
    assert batching["priority_queue_policy"]["2"]["default_timeout_microseconds"] == 5
    assert got["parameters"] == {"k": {"string_value": "v"}}
    assert "sequence_batching" not in got  # an unset message stays out, as over HTTP
    assert Signature.from_config(got) == Signature("m", (TensorSpec("x", "FP32", (3, -1)),), (), 0)


def test_the_sync_facade_opens_one_client_per_call_and_closes_it(monkeypatch):
    opened = []

    class Result:
        def as_numpy(self, name):
            return np.array([len(name)])

    class Recording(Client):
        def __init__(self, protocol, address, timeout_s):
            self.protocol, self.address, self.timeout_s = protocol, address, timeout_s
            self.calls, self.closed = [], False
            opened.append(self)

        def prepare(self, arrays, datatypes):
            return (dict(arrays), dict(datatypes))

        async def infer(self, model, payload, version, timeout_s, outputs=None):
            self.calls.append(("infer", model, payload, version, timeout_s, outputs))
            return Result()

        async def model_ready(self, model, version=""):
            return version == "1"

        async def _statistics(self, model, version):
            return {"model_stats": [{"name": model, "version": version}] if model == "m" else []}

        async def close(self):
            self.closed = True

    monkeypatch.setattr(client_mod, "open_client",
                        lambda protocol, address, *, connections, timeout_s:
                        Recording(protocol, address, timeout_s))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2]  # not contiguous
    out = client_mod.infer("http://h:8000/", "m", {"x": x}, ["y", "score"], version="2")
    assert set(out) == {"y", "score"} and out["score"].tolist() == [5]
    (c,) = opened
    assert (c.protocol, c.address, c.timeout_s, c.closed) == ("http", "h:8000", 30.0, True)
    (_, model, (arrays, datatypes), version, timeout_s, outputs), = c.calls
    assert (model, version, timeout_s, outputs, datatypes) == ("m", "2", 30.0, ["y", "score"], {})
    assert arrays["x"].flags.c_contiguous and arrays["x"].tolist() == x.tolist()
    assert client_mod.model_ready("h:8001", "m", version="1") and opened[-1].protocol == "grpc"
    assert opened[-1].timeout_s == 5.0 and opened[-1].closed
    assert not client_mod.model_ready("h:8000", "m", protocol="http")
    assert client_mod.model_stats("grpc://h:8001", "m", version="3") == {"name": "m", "version": "3"}
    with pytest.raises(LookupError, match="no statistics for model 'n'"):
        client_mod.model_stats("h:8001", "n")
    assert all(c.closed for c in opened) and len(opened) == 5
    with pytest.raises(ValueError, match="expected host:port"):
        client_mod.model_ready("http://h", "m")


class FakeClient(Client):
    """An in-process endpoint: answers after `latency` seconds, or fails with `error`."""

    behaviour: dict[str, dict] = {}
    calls: dict[str, int] = {}

    def __init__(self, address):
        self.address = address
        self.protocol = "grpc"

    def prepare(self, arrays, datatypes):
        return arrays

    async def infer(self, model, payload, version, timeout_s):
        FakeClient.calls[self.address] = FakeClient.calls.get(self.address, 0) + 1
        b = FakeClient.behaviour.get(self.address, {})
        await asyncio.sleep(b.get("latency", 0.001))
        if b.get("error"):
            raise ConnectionRefusedError("down")

    async def model_config(self, model, version=""):
        return HTTP_CONFIG

    async def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    FakeClient.behaviour, FakeClient.calls = {}, {}
    monkeypatch.setattr(client_mod, "open_client",
                        lambda protocol, address, **kw: FakeClient(address))
    return FakeClient


def _inputs(i):
    return {"x": np.zeros((1, 2), np.float32)}


def test_pool_round_robin_skips_failing_endpoints_and_probes_them(fake):
    pool = EndpointPool(["a:1", "b:1", "c:1"], skip_after=2, skip_seconds=1.0)
    asyncio.run(pool.refresh())
    picks = [pool.pick(0.0).url for _ in range(6)]
    assert picks == ["a:1", "b:1", "c:1"] * 2
    b = pool.endpoints["b:1"]
    pool.failed(b, 0.0)
    assert pool.pick(0.0).url == "a:1" and pool.pick(0.0).url == "b:1"  # one failure: still in
    pool.failed(b, 0.0)
    assert b.skips == 1 and [pool.pick(0.5).url for _ in range(4)] == ["c:1", "a:1", "c:1", "a:1"]
    assert pool.pick(1.0).url == "b:1"  # the probe, after skip_seconds
    assert [pool.pick(1.1).url for _ in range(2)] == ["c:1", "a:1"]  # one probe at a time
    pool.succeeded(b)
    assert pool.pick(1.1).url == "b:1"
    pool.update(["c:1"])
    assert [pool.pick(2.0).url for _ in range(2)] == ["c:1", "c:1"]
    assert set(pool.endpoints) == {"a:1", "b:1", "c:1"}  # kept for the stats
    pool.update([])
    assert pool.pick(2.0) is None and pool.next_available(2.0) is None


def test_fixed_rate_is_open_loop_and_drops_beyond_the_inflight_cap(fake):
    fake.behaviour["slow:1"] = {"latency": 0.25}
    r = asyncio.run(run_load(["slow:1"], "m", mode="rate", rate=100, duration=1.0,
                             inputs_factory=_inputs, max_inflight=10))
    # 100 due; at most 10 outstanding, each for 0.25 s: ~40 sent, the rest dropped, not delayed
    assert r.sent + r.dropped == 100 and r.offered_rps == pytest.approx(100, rel=0.02)
    assert 30 <= r.sent <= 50 and r.dropped_by_kind == {"inflight_cap": r.dropped}
    assert r.send_lag_ms["p99"] < 10 and not r.warnings  # the generator kept to the schedule
    assert r.latency_ms["p50"] >= 250 and not r.ok()


def test_fixed_rate_latency_is_from_the_intended_start(fake, monkeypatch):
    # a client that blocks the event loop for 30 ms per request: requests go out late,
    # and their latency counts the lateness (no coordinated omission)
    async def blocking_infer(self, model, payload, version, timeout_s):
        time.sleep(0.03)

    monkeypatch.setattr(FakeClient, "infer", blocking_infer)
    r = asyncio.run(run_load(["a:1"], "m", mode="rate", rate=100, duration=0.6,
                             inputs_factory=_inputs))
    assert r.sent == 60 and r.completed == 60
    assert r.latency_ms["max"] > 300 and r.service_ms["max"] < 100
    assert r.send_lag_ms["max"] > 300
    assert len(r.warnings) == 1 and "fell behind its schedule" in r.warnings[0]


def test_concurrency_mode_bounds_and_a_dead_endpoint_is_skipped(fake):
    fake.behaviour["dead:1"] = {"error": True}
    r = asyncio.run(run_load(["ok:1", "dead:1"], "m", concurrency=3, duration=0.6,
                             max_requests=200, inputs_factory=_inputs, skip_after=3,
                             skip_seconds=10.0))
    assert r.stop_reason == "max_requests" and r.sent == 200
    dead = r.endpoints["dead:1"]
    assert 3 <= dead.errors <= 5 and dead.skips == 1 and dead.completed == 0  # 3 + in flight
    assert r.endpoints["ok:1"].completed == r.completed == 200 - dead.errors
    assert r.errors_by_kind == {"connection": dead.errors}
    r = asyncio.run(run_load(["ok:1"], "m", concurrency=2, duration=0.5, inputs_factory=_inputs))
    assert r.stop_reason == "duration" and 0.5 <= r.elapsed_s < 0.6


def test_callable_endpoints_are_reread_and_progress_is_reported(fake):
    t0 = time.monotonic()
    reports = []

    def current():
        return ["a:1"] if time.monotonic() - t0 < 0.5 else ["a:1", "b:1"]

    r = asyncio.run(run_load(current, "m", concurrency=2, duration=1.2, inputs_factory=_inputs,
                             refresh_interval=0.2, on_progress=reports.append,
                             progress_interval=0.25, warmup=0.4))
    assert r.endpoints["a:1"].sent > r.endpoints["b:1"].sent > 0
    assert [p.phase for p in reports[:1]] == ["warmup"] and reports[-1].phase == "measure"
    assert 4 <= len(reports) <= 7 and reports[-1].endpoints_present == 2
    assert reports[-1].completed <= r.total["completed"] and reports[-1].rps > 0


def test_bad_parameters_are_refused():
    for kwargs in ({"mode": "rate"}, {"mode": "x"}, {"concurrency": 0},
                   {"concurrency": 1, "duration": float("inf")},
                   {"concurrency": 1, "max_requests": 0}, {"concurrency": 1, "batch_rows": 0}):
        with pytest.raises(ValueError):
            asyncio.run(run_load(["a:1"], "m", **kwargs))


def test_capacity_stops_when_throughput_stops_rising(fake, monkeypatch):
    # each fake request takes 10 ms however many are in flight at once... up to 4, then it queues
    state = {"inflight": 0}

    async def infer(self, model, payload, version, timeout_s):
        state["inflight"] += 1
        try:
            await asyncio.sleep(0.01 * max(1, state["inflight"] / 4))
        finally:
            state["inflight"] -= 1

    monkeypatch.setattr(FakeClient, "infer", infer)
    c = asyncio.run(find_capacity(["a:1"], "m", slo_ms=1000, start=1, max_steps=6,
                                  step_seconds=0.3, step_warmup=0.05, inputs_factory=_inputs))
    levels = [s.level for s in c.steps]
    assert levels[:3] == [1, 2, 4] and len(levels) <= 5
    assert "stopped rising" in c.stop_reason and not c.lower_bound
    assert c.capacity_rps == max(s.throughput_rps for s in c.steps) > 200
    assert c.per_replica_rps == c.capacity_rps and c.replicas == 1


def test_capacity_judge():
    class R:
        mode, rate, completed, sent, dropped, errors, throughput_rps = "rate", 100.0, 50, 50, 0, 0, 95
        latency_ms, send_lag_ms = {"p99": 20.0}, {"p99": 1.0}

    kw = dict(slo_ms=25, max_error_rate=0.0, min_achieved=0.9)
    assert judge(R, **kw) == "ok"
    R.send_lag_ms = {"p99": 30.0}
    assert judge(R, **kw).startswith("the load generator fell behind")
    R.send_lag_ms = {"p99": 1.0}
    assert judge(R, **{**kw, "slo_ms": 10}).startswith("p99 20.0 ms > SLO 10 ms")
    R.throughput_rps = 80
    assert judge(R, **kw).startswith("achieved 80.0 req/s")
    R.errors = 5
    assert judge(R, **kw).startswith("error rate")


def test_npz_rows_are_all_sent_in_turn(fake, monkeypatch):
    seen = []

    async def infer(self, model, payload, version, timeout_s):
        seen.append(int(payload["x"][0, 0]))

    monkeypatch.setattr(FakeClient, "infer", infer)
    sig = Signature("m", (TensorSpec("x", "FP32", (1,)),), ("y",), 8)
    data = RequestData(sig, 2, {"x": np.arange(10, dtype=np.float32).reshape(10, 1)})
    r = asyncio.run(run_load(["a:1"], "m", concurrency=1, duration=5, max_requests=7,
                             inputs_factory=data, signature=sig))
    assert r.completed == 7 and seen == [0, 2, 4, 6, 8, 0, 2]
