"""Small helpers over tritonclient (HTTP and gRPC inference) and Triton's Prometheus metrics.

Needs the ``client`` extra (tritonclient, numpy); the operator itself does not import this module.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Mapping, Sequence

import numpy as np

Labels = frozenset  # frozenset of (label, value) pairs
Metrics = dict[tuple[str, Labels], float]

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _host_port(url: str) -> str:
    """tritonclient wants ``host:port``; accept ``http://host:port[/]`` too."""
    return re.sub(r"^[a-z]+://", "", url).rstrip("/")


def _np_to_triton(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    dtype = np_to_triton_dtype(array.dtype)
    if dtype is None:
        raise TypeError(f"no Triton data type for numpy {array.dtype}")
    return dtype


def infer_http(url: str, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
               *, version: str = "", timeout_s: float = 30.0) -> dict[str, np.ndarray]:
    """One inference over HTTP (``url``: ``host:port`` or ``http://host:port``)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(_host_port(url), connection_timeout=timeout_s,
                                              network_timeout=timeout_s)
    try:
        infer_inputs = []
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            t = httpclient.InferInput(name, list(array.shape), _np_to_triton(array))
            t.set_data_from_numpy(array, binary_data=True)
            infer_inputs.append(t)
        requested = [httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs]
        result = client.infer(model, infer_inputs, model_version=version, outputs=requested)
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


def infer_grpc(url: str, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
               *, version: str = "", timeout_s: float = 30.0) -> dict[str, np.ndarray]:
    """One inference over gRPC (``url``: ``host:port``); never through an HTTP proxy."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(_host_port(url),
                                              channel_args=[("grpc.enable_http_proxy", 0)])
    try:
        infer_inputs = []
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            t = grpcclient.InferInput(name, list(array.shape), _np_to_triton(array))
            t.set_data_from_numpy(array)
            infer_inputs.append(t)
        requested = [grpcclient.InferRequestedOutput(n) for n in outputs]
        result = client.infer(model, infer_inputs, model_version=version, outputs=requested,
                              client_timeout=timeout_s)
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


def _get_json(url: str, timeout_s: float) -> dict:
    url = url if "://" in url else f"http://{url}"
    with _NO_PROXY.open(url, timeout=timeout_s) as r:
        return json.loads(r.read())


def model_ready(http_url: str, model: str, *, version: str = "", timeout_s: float = 5.0) -> bool:
    """``GET /v2/models/<model>[/versions/<v>]/ready`` answered 200."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/ready"
    try:
        with _NO_PROXY.open(_base(http_url) + path, timeout=timeout_s) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def model_config(http_url: str, model: str, *, timeout_s: float = 5.0) -> dict:
    """The configuration the server loaded (``GET /v2/models/<model>/config``), as JSON."""
    return _get_json(f"{_base(http_url)}/v2/models/{model}/config", timeout_s)


def model_stats(http_url: str, model: str, *, version: str = "", timeout_s: float = 5.0) -> dict:
    """The model's statistics entry for ``version`` (the first one when not given).

    Triton counts the configured model_warmup requests here too (``inference_stats.success``).
    """
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/stats"
    stats = _get_json(_base(http_url) + path, timeout_s)["model_stats"]
    if not stats:
        raise LookupError(f"no statistics for model {model!r}")
    return stats[0]


def _base(url: str) -> str:
    return (url if "://" in url else f"http://{url}").rstrip("/")


def scrape_metrics(metrics_url: str, *, timeout_s: float = 10.0) -> str:
    """The Prometheus text from Triton's metrics endpoint (``http://host:port/metrics``)."""
    url = metrics_url if "://" in metrics_url else f"http://{metrics_url}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    with _NO_PROXY.open(url, timeout=timeout_s) as r:
        return r.read().decode()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _labels(text: str) -> Labels:
    pairs, pos = [], 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            raise ValueError(f"bad labels: {{{text}}}")
        pairs.append((m.group(1), re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], m.group(2))))
        pos = m.end()
    return frozenset(pairs)


def parse_metrics(text: str) -> Metrics:
    """``{(name, frozenset({(label, value), ...})): value}`` for each sample line.

    ``nv_inference_request_success{model="m",version="1"} 3`` gives
    ``{("nv_inference_request_success", frozenset({("model", "m"), ("version", "1")})): 3.0}``.
    Comments and blank lines are skipped; NaN and +/-Inf parse as floats.
    """
    samples: Metrics = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        samples[(m.group(1), _labels(m.group(2) or ""))] = float(m.group(3))
    return samples


def metric_values(metrics: Metrics, name: str, **labels: str) -> list[float]:
    """Values of ``name`` whose labels include all of ``labels``."""
    want = set(labels.items())
    return [v for (n, ls), v in metrics.items() if n == name and want <= ls]
