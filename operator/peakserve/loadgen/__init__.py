"""Bounded load generation against Triton endpoints: `peakserve bench` and its Python API.

    from peakserve.loadgen import run_load, find_capacity
    result = await run_load(["127.0.0.1:8001"], "ranker", mode="rate", rate=200, duration=10)

See :mod:`.runner` (fixed rate / fixed concurrency), :mod:`.capacity` (capacity search),
:mod:`.data` (request tensors), :mod:`.stats` (results) and :mod:`.cli` (the command).
Needs the ``client`` extra (tritonclient[grpc,http], numpy).
"""

from .capacity import CapacityResult, CapacityStep, find_capacity
from .data import DataError, RequestData, Signature, TensorSpec, load_npz, random_inputs
from .endpoints import parse_endpoint
from .runner import LoadError, Progress, run_load
from .stats import EndpointStats, LoadResult, latency_summary, percentile, time_series

__all__ = [
    "CapacityResult", "CapacityStep", "DataError", "EndpointStats", "LoadError", "LoadResult",
    "Progress", "RequestData", "Signature", "TensorSpec", "find_capacity", "latency_summary",
    "load_npz", "parse_endpoint", "percentile", "random_inputs", "run_load", "time_series",
]
