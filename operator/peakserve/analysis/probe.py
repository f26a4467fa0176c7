"""The probe comparison: the same batch of real inputs through one stable and one canary Triton.

Requests go through peakserve's one Triton client (peakserve.loadgen.client, HTTP), one asyncio
client per side. Each side's signature comes from the config its server loaded; the probe must
fit it (names, numpy types, per-row dims), and the batch is cut into requests of at most the
side's max_batch_size (one row per request, without a batch axis, for max_batch_size 0).

The first output tensor of the stable config is compared. :func:`compare_outputs` is pure: the
figures from two output arrays (tested without a server); the rest talks to Triton.

The canary is asked for ``--version``. The stable side is asked for it too, and for the
server's own choice of version when it does not serve that one (a rollout that bumps the
model version: the stable pods still serve the old one).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import AnalysisError
from ..builder.probe_data import ProbeDataError, read_probe
from .stats import auc, ks_statistic, max_abs_diff, psi, row_cosines, top_k_agreement

TIMEOUT_S = 30.0
KINDS = ("ranker", "embedding", "generic")


# ------------------------------------------------------------------------------------- pure part

def resolve_kind(kind: str, output: np.ndarray) -> str:
    """auto -> ranker when the output has one value per row, else embedding."""
    if kind != "auto":
        return kind
    return "ranker" if output[0].size == 1 else "embedding"


def compare_outputs(stable: np.ndarray, canary: np.ndarray, kind: str, top_k: int,
                    labels: np.ndarray | None = None) -> dict[str, float]:
    """The probe figures of the canary's outputs against the stable's (rows along axis 0).

    Every kind: probeRows, maxAbsDiff. Rankers: psi, ks, topKAgreement (k = min(top_k, rows)) and,
    with labels of both classes, stableAuc and canaryAuc. Embeddings: cosineMin, cosineMean.
    ``kind`` is ranker, embedding or generic (resolve ``auto`` first).
    """
    if stable.shape != canary.shape:
        raise AnalysisError(f"stable and canary outputs differ in shape: {stable.shape} vs {canary.shape}")
    rows = len(stable)
    figures: dict[str, float] = {"probeRows": rows, "maxAbsDiff": max_abs_diff(stable, canary)}
    if kind == "ranker":
        if stable[0].size != 1:
            raise AnalysisError(f"probe kind ranker, but the output has {stable[0].size} values per row")
        s, c = stable.reshape(-1), canary.reshape(-1)
        figures.update(psi=psi(s, c), ks=ks_statistic(s, c), topKAgreement=top_k_agreement(s, c, min(top_k, rows)))
        if labels is not None:
            stable_auc = auc(s, labels)
            if stable_auc == stable_auc:  # NaN: the labels hold one class, AUC means nothing
                figures.update(stableAuc=stable_auc, canaryAuc=auc(c, labels))
    elif kind == "embedding":
        cos = row_cosines(stable, canary)
        figures.update(cosineMin=float(np.min(cos)), cosineMean=float(np.mean(cos)))
    elif kind != "generic":
        raise ValueError(f"probe kind must be one of {KINDS}, got {kind!r}")
    return figures


# ------------------------------------------------------------------------------------- signature

def check_inputs(signature, inputs: dict[str, np.ndarray], side: str) -> None:
    """The probe arrays fit the side's signature (loadgen.data.Signature): numpy type, per-row dims."""
    for spec in signature.inputs:
        array = inputs[spec.name]
        if spec.datatype == "BYTES":
            type_ok = array.dtype.kind in "SUO"
        else:
            type_ok = array.dtype == np.dtype(spec.numpy_dtype)
        if not type_ok:
            raise AnalysisError(f"probe input {spec.name!r} is {array.dtype}, the {side} model takes "
                                f"{spec.datatype}")
        row = array.shape[1:]
        if len(row) != len(spec.dims) or any(d >= 0 and d != n for d, n in zip(spec.dims, row)):
            raise AnalysisError(f"probe input {spec.name!r} has rows of shape {list(row)}, the {side} "
                                f"model takes {list(spec.dims)}")


def requests_of(inputs: dict[str, np.ndarray], max_batch_size: int) -> list[dict[str, np.ndarray]]:
    """The request inputs: chunks of at most max_batch_size rows, or single rows without a batch axis."""
    rows = len(next(iter(inputs.values())))
    if max_batch_size <= 0:
        return [{n: np.ascontiguousarray(a[i]) for n, a in inputs.items()} for i in range(rows)]
    return [{n: np.ascontiguousarray(a[i:i + max_batch_size]) for n, a in inputs.items()}
            for i in range(0, rows, max_batch_size)]


# ------------------------------------------------------------------------------------- Triton

@dataclass
class SideAnswer:
    url: str                 # the endpoint that answered
    version: str             # the version asked for ("" = the server's choice)
    output_name: str
    output: np.ndarray


async def _ready_endpoint(side: str, urls: Sequence[str], model: str, version: str, timeout_s: float):
    """The first endpoint whose server says the model is ready: (target, client, version asked)."""
    from ..loadgen.client import error_kind, open_client, parse_endpoint

    problems = []
    for url in urls:
        try:
            target = parse_endpoint(url, "http")
        except ValueError as err:
            raise AnalysisError(f"--{side} {url}: {err}") from None
        client = open_client(target.protocol, target.address, connections=1, timeout_s=timeout_s)
        try:
            versions = (version, "") if side == "stable" and version else (version,)
            for v in versions:
                if await client.model_ready(model, v):
                    return target, client, v
            problems.append(f"{url}: model {model} version {version or '(any)'} not ready")
        except Exception as err:  # noqa: BLE001 - any failure makes this endpoint unusable
            problems.append(f"{url}: {error_kind(err)}")
        await client.close()
    raise AnalysisError(f"no {side} endpoint serves model {model}: " + "; ".join(problems))


async def _answer(side: str, urls: Sequence[str], model: str, version: str, probe: Path, rows: int,
                  output_name: str | None, timeout_s: float) -> tuple[SideAnswer, np.ndarray | None]:
    from ..loadgen.client import error_kind
    from ..loadgen.data import DataError, Signature

    target, client, asked = await _ready_endpoint(side, urls, model, version, timeout_s)
    try:
        try:
            signature = Signature.from_config(await client.model_config(model, asked), model)
        except DataError as err:
            raise AnalysisError(f"{side} {target.url}: {err}") from None
        except Exception as err:  # noqa: BLE001
            raise AnalysisError(f"{side} {target.url}: model config unreadable: {error_kind(err)}") from None
        try:
            inputs, labels = read_probe(probe, [t.name for t in signature.inputs])
        except ProbeDataError as err:
            raise AnalysisError(str(err)) from None
        inputs = {n: a[:rows] for n, a in inputs.items()}
        labels = None if labels is None else labels[:rows]
        count = len(next(iter(inputs.values())))
        if count < 2:
            raise AnalysisError(f"probe file {Path(probe).name} has {count} rows; at least 2 are needed")
        check_inputs(signature, inputs, side)
        if not signature.outputs:
            raise AnalysisError(f"{side} model {model} declares no outputs")
        name = output_name or signature.outputs[0]
        if name not in signature.outputs:
            raise AnalysisError(f"{side} model {model} has no output {name!r} (it has {list(signature.outputs)})")
        datatypes = {t.name: t.datatype for t in signature.inputs}
        parts = []
        for request in requests_of(inputs, signature.max_batch_size):
            try:
                result = await client.infer(model, client.prepare(request, datatypes), asked, timeout_s, [name])
            except Exception as err:  # noqa: BLE001
                raise AnalysisError(f"{side} {target.url}: inference failed: {error_kind(err)}: "
                                    f"{str(err)[:200]}") from None
            parts.append(result.as_numpy(name))
        output = np.stack(parts) if signature.max_batch_size <= 0 else np.concatenate(parts)
        return SideAnswer(target.url, asked, name, output), labels
    finally:
        await client.close()


def run_probe(model: str, version: str, stable: Sequence[str], canary: Sequence[str], probe: Path,
              kind: str, rows: int, top_k: int, timeout_s: float = TIMEOUT_S
              ) -> tuple[dict[str, float], str, bool]:
    """Send the probe's first ``rows`` rows to one stable and one canary endpoint.

    Returns (figures, the kind compared, whether the probe has labels).
    """
    if not Path(probe).is_file():  # before any endpoint is asked
        raise AnalysisError(f"probe file {probe} not found")
    stable_answer, labels = asyncio.run(_answer("stable", stable, model, version, probe, rows, None, timeout_s))
    canary_answer, _ = asyncio.run(_answer("canary", canary, model, version, probe, rows,
                                           stable_answer.output_name, timeout_s))
    if stable_answer.output.dtype.kind not in "biuf" or canary_answer.output.dtype.kind not in "biuf":
        raise AnalysisError(f"output {stable_answer.output_name!r} is not numeric "
                            f"({stable_answer.output.dtype}): there is nothing to compare")
    s = stable_answer.output.astype(np.float64)
    c = canary_answer.output.astype(np.float64)
    resolved = resolve_kind(kind, s)
    return compare_outputs(s, c, resolved, top_k, labels), resolved, labels is not None
