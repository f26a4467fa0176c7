"""Triton's Prometheus metrics as text: scrape the metrics port, parse the samples, pick values.

Not a Triton client (that is :mod:`peakserve.loadgen.client`); only the standard library.
"""

from __future__ import annotations

import re

from ..loopback import DIRECT

Labels = frozenset  # frozenset of (label, value) pairs
Metrics = dict[tuple[str, Labels], float]



def scrape_metrics(metrics_url: str, *, timeout_s: float = 10.0) -> str:
    """The Prometheus text from Triton's metrics endpoint (``http://host:port/metrics``)."""
    url = metrics_url if "://" in metrics_url else f"http://{metrics_url}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    with DIRECT.open(url, timeout=timeout_s) as r:
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
