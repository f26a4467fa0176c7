"""Bounded load generation against Triton endpoints: `peakserve bench` and its Python API.

    from peakserve.loadgen import run_load, find_capacity
    result = await run_load(["127.0.0.1:8001"], "ranker", mode="rate", rate=200, duration=10)

See :mod:`.runner` (fixed rate / fixed concurrency), :mod:`.capacity` (capacity search),
:mod:`.data` (request tensors), :mod:`.stats` (results), :mod:`.endpoints` (URLs, the endpoint
pool), :mod:`.client` (the Triton client, async and sync) and :mod:`.cli` (the command).
Needs the ``client`` extra (tritonclient[grpc,http], numpy).
"""

import importlib

# Lazy, so that importing peakserve.loadgen (the `bench` parser) needs neither numpy nor tritonclient.
_EXPORTS = {
    "CapacityResult": "capacity", "CapacityStep": "capacity", "find_capacity": "capacity",
    "DataError": "data", "RequestData": "data", "Signature": "data", "TensorSpec": "data", "load_npz": "data",
    "random_inputs": "data", "parse_endpoint": "client", "LoadError": "runner", "Progress": "runner",
    "run_load": "runner", "EndpointStats": "stats", "LoadResult": "stats", "latency_summary": "stats",
    "percentile": "stats", "time_series": "stats",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)
