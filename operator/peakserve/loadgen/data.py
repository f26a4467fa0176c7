"""Request data for a load run: the model's input signature, and the tensors of each request.

The signature comes from the configuration the server loaded (``GET /v2/models/<m>/config``, or
the gRPC ``ModelConfig`` call for a gRPC endpoint). Requests carry either random tensors of that
signature (:func:`random_inputs`) or rows of real inputs from an ``.npz`` file
(:func:`load_npz`): one array per input, with a leading row axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

VARIABLE_DIM = 8            # the length used for a -1 dimension in random inputs
INT_RANGE = (0, 100)        # random integer inputs are drawn from [low, high)


class DataError(ValueError):
    """The request data does not fit the model (names, types, shapes, batch size)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str                # Triton's wire type: "FP32", "INT64", "BYTES", ...
    dims: tuple[int, ...]        # per row (without the batch dimension); -1 is variable

    @property
    def numpy_dtype(self) -> Any:
        from tritonclient.utils import triton_to_np_dtype

        dtype = triton_to_np_dtype(self.datatype)
        if dtype is None:
            raise DataError(f"input {self.name!r}: no numpy type for Triton type {self.datatype}")
        return dtype


@dataclass(frozen=True)
class Signature:
    model: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    max_batch_size: int          # 0: the model takes no batch dimension

    @classmethod
    def from_config(cls, config: Mapping[str, Any], model: str | None = None) -> Signature:
        """From a model configuration as JSON: the HTTP ``/config`` body (what
        :meth:`~.client.Client.model_config` returns over both protocols) or tritonclient gRPC's
        ``as_json``, which wraps it in ``{"config": ...}``, writes int64 dims as strings and leaves
        out zero values (``max_batch_size: 0``); both forms are accepted.
        """
        config = config.get("config", config)
        inputs = []
        for t in config.get("input", []):
            data_type = str(t.get("data_type", "TYPE_INVALID"))
            datatype = data_type.removeprefix("TYPE_")
            datatype = "BYTES" if datatype == "STRING" else datatype
            inputs.append(TensorSpec(t["name"], datatype, tuple(int(d) for d in t.get("dims", []))))
        if not inputs:
            raise DataError(f"model {model or config.get('name')!r}: its config declares no inputs")
        return cls(model=model or str(config.get("name", "")), inputs=tuple(inputs),
                   outputs=tuple(t["name"] for t in config.get("output", [])),
                   max_batch_size=int(config.get("max_batch_size", 0) or 0))

    def check_batch(self, rows: int) -> None:
        if rows < 1:
            raise DataError(f"batch rows must be >= 1, got {rows}")
        if self.max_batch_size == 0 and rows != 1:
            raise DataError(f"model {self.model!r} has max_batch_size 0 (no batch dimension): "
                            f"one row per request, not {rows}")
        if self.max_batch_size and rows > self.max_batch_size:
            raise DataError(f"batch rows {rows} > the model's max_batch_size {self.max_batch_size}")

    def request_shape(self, spec: TensorSpec, rows: int, variable: int = VARIABLE_DIM) -> tuple:
        dims = tuple(variable if d < 0 else d for d in spec.dims)
        return (rows, *dims) if self.max_batch_size else dims


def random_inputs(signature: Signature, rows: int, rng: np.random.Generator, *,
                  variable_dim: int = VARIABLE_DIM,
                  int_range: tuple[int, int] = INT_RANGE) -> dict[str, np.ndarray]:
    """One request's random tensors: floats ~ N(0, 1), ints in ``int_range``, random bools/bytes."""
    out = {}
    for spec in signature.inputs:
        shape = signature.request_shape(spec, rows, variable_dim)
        dtype = spec.numpy_dtype
        kind = spec.datatype
        if kind == "BOOL":
            arr = rng.random(shape) < 0.5
        elif kind == "BYTES":
            words = rng.integers(0, 1 << 30, size=shape)
            arr = np.vectorize(lambda w: b"w%d" % w, otypes=[object])(words) if words.size \
                else np.empty(shape, dtype=object)
        elif kind.startswith(("INT", "UINT")):
            arr = rng.integers(int_range[0], int_range[1], size=shape).astype(dtype)
        else:  # FP16/FP32/FP64/BF16
            arr = rng.standard_normal(shape).astype(np.float32).astype(dtype)
        out[spec.name] = np.ascontiguousarray(arr)
    return out


def load_npz(path: str | Path, signature: Signature) -> dict[str, np.ndarray]:
    """The model's inputs from an ``.npz``: ``{name: array[N, *dims]}``, checked and cast.

    Every input of the signature must be there with a leading row axis and the configured dims
    (a -1 dim matches any length); keys that are not inputs (labels) are ignored. Values are cast
    to the configured type when numpy can do it without changing their kind in an unsafe way
    (int64 -> int32 is allowed, float -> int is not). All arrays must have the same row count.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    with archive:
        present = set(archive.files)
        missing = [s.name for s in signature.inputs if s.name not in present]
        if missing:
            raise DataError(f"{path}: no array for input(s) {missing} (it has {sorted(present)})")
        out: dict[str, np.ndarray] = {}
        for spec in signature.inputs:
            arr = archive[spec.name]
            if arr.ndim != len(spec.dims) + 1 or any(
                    d >= 0 and a != d for a, d in zip(arr.shape[1:], spec.dims)):
                raise DataError(f"{path}: {spec.name} has shape {list(arr.shape)}; expected "
                                f"[rows, {', '.join(map(str, spec.dims))}] for the model's dims "
                                f"{list(spec.dims)}")
            want = np.dtype(spec.numpy_dtype)
            if spec.datatype == "BYTES":
                arr = arr.astype(object)
            elif arr.dtype != want:
                if not np.can_cast(arr.dtype, want, casting="same_kind"):
                    raise DataError(f"{path}: {spec.name} is {arr.dtype}; the model wants "
                                    f"{spec.datatype}")
                arr = arr.astype(want)
            out[spec.name] = np.ascontiguousarray(arr)
    counts = {len(a) for a in out.values()}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"{path}: inputs have row counts {sorted(counts)}; they must be equal, > 0")
    return out


class RequestData:
    """The tensors of request ``i``: ``data(i) -> {input: array}`` (an ``inputs_factory``).

    With ``source`` (from :func:`load_npz`) request ``i`` takes rows ``i*rows ...`` of it,
    wrapping around; without it, random tensors seeded by ``(seed, i)`` (reproducible).
    """

    def __init__(self, signature: Signature, rows: int = 1,
                 source: Mapping[str, np.ndarray] | None = None, *, seed: int = 0,
                 int_range: tuple[int, int] = INT_RANGE, variable_dim: int = VARIABLE_DIM):
        signature.check_batch(rows)
        self.signature = signature
        self.rows = rows
        self.source = dict(source) if source is not None else None
        self.seed = seed
        self.int_range = int_range
        self.variable_dim = variable_dim
        if self.source is not None:
            self.available_rows = len(next(iter(self.source.values())))

    def __call__(self, i: int) -> dict[str, np.ndarray]:
        if self.source is None:
            return random_inputs(self.signature, self.rows, np.random.default_rng((self.seed, i)),
                                 variable_dim=self.variable_dim, int_range=self.int_range)
        index = np.arange(i * self.rows, (i + 1) * self.rows)
        out = {}
        for name, arr in self.source.items():
            part = np.take(arr, index, axis=0, mode="wrap")
            out[name] = np.ascontiguousarray(part if self.signature.max_batch_size else part[0])
        return out


async def fetch_signature(address: str, protocol: str, model: str, *, version: str = "",
                          timeout_s: float = 10.0) -> Signature:
    """The signature of ``model`` from the config the server at ``address`` (host:port) loaded."""
    from .client import open_client

    client = open_client(protocol, address, connections=1, timeout_s=timeout_s)
    try:
        config = await client.model_config(model, version)
    finally:
        await client.close()
    return Signature.from_config(config, model)
