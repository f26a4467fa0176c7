"""The model's signature (spec.model.inputs/outputs) checked against what the files really hold.

Triton matches tensors by name, type and shape; a mismatch found here is a clear build failure
instead of a model that loads and then rejects every request.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..api.spec import ModelSpec, Tensor
from .errors import BuildError

TRITON_TO_NUMPY: dict[str, type] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
# onnx.TensorProto element types, by number so that this table needs no onnx import.
ONNX_TO_TRITON: dict[int, str] = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING",
    9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64", 16: "BF16",
}


def triton_type(dtype: np.dtype) -> str:
    for name, np_type in TRITON_TO_NUMPY.items():
        if np.dtype(np_type) == dtype:
            return name
    return str(dtype)


def describe(name: str, data_type: str, dims: Sequence[int | None]) -> str:
    return f"{name}: {data_type}{list('?' if d is None else d for d in dims)}"


def dims_match(expected: Sequence[int], found: Sequence[int | None]) -> bool:
    """-1 in the spec matches any size; None (a symbolic ONNX dim) matches any spec size."""
    return len(expected) == len(found) and all(e == -1 or f is None or e == f for e, f in zip(expected, found))


def check_buildable(model: ModelSpec, task: str) -> None:
    """The gates compare numbers: tensors without a numpy dtype (STRING, BF16) cannot be built here."""
    bad = [t.name for t in (*model.inputs, *model.outputs) if t.data_type not in TRITON_TO_NUMPY]
    if bad:
        raise BuildError("InvalidSpec", f"the builder cannot feed or compare tensors {bad} "
                                        "(STRING and BF16 have no numeric reference); serve such a model "
                                        "with model.uri instead of build")
    if task == "ranker" and any(d != 1 for d in model.outputs[0].dims):
        raise BuildError("InvalidSpec", f"task ranker scores rows with the first output, which must hold one "
                                        f"value per row; {model.outputs[0].name!r} has dims {model.outputs[0].dims}")
    if model.max_batch_size < 1:
        raise BuildError("InvalidSpec", "a build needs model.maxBatchSize >= 1: the gates run batches")


def check_array(array: np.ndarray, tensor: Tensor, where: str) -> None:
    """A data array: one row per sample, each row shaped like the tensor's dims."""
    expected = describe(tensor.name, tensor.data_type, ["N", *tensor.dims])  # type: ignore[list-item]
    found = describe(tensor.name, triton_type(array.dtype), ["N", *array.shape[1:]])  # type: ignore[list-item]
    if array.dtype != np.dtype(TRITON_TO_NUMPY[tensor.data_type]) or not dims_match(tensor.dims, array.shape[1:]):
        raise BuildError("SignatureMismatch", f"{where}: expected {expected}, found {found}")


def check_outputs(outputs: Sequence[np.ndarray], tensors: Sequence[Tensor], where: str) -> None:
    """Outputs of one batch, in spec order, against spec.model.outputs."""
    if len(outputs) != len(tensors):
        raise BuildError("SignatureMismatch", f"{where}: expected {len(tensors)} output(s) "
                                              f"{[t.name for t in tensors]}, found {len(outputs)}")
    for array, tensor in zip(outputs, tensors):
        check_array(array, tensor, f"{where} output {tensor.name!r}")


def _onnx_tensors(values, skip: set[str]) -> dict[str, tuple[str, list[int | None]]]:
    out = {}
    for v in values:
        if v.name in skip:
            continue
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        out[v.name] = (ONNX_TO_TRITON.get(t.elem_type, f"onnx type {t.elem_type}"), dims)
    return out


def check_onnx_graph(graph, model: ModelSpec, where: str) -> None:
    """Graph inputs must be exactly the spec's inputs; every spec output must be a graph output.

    The first dimension must be free, because Triton batches along it (maxBatchSize >= 1).
    """
    initializers = {i.name for i in graph.initializer}  # old exporters list weights as inputs too
    found_in = _onnx_tensors(graph.input, initializers)
    found_out = _onnx_tensors(graph.output, set())
    problems = []
    expected_names = {t.name for t in model.inputs}
    for name in sorted(set(found_in) - expected_names):
        problems.append(f"unexpected input {describe(name, *found_in[name])}")
    for kind, tensors, found in (("input", model.inputs, found_in), ("output", model.outputs, found_out)):
        for t in tensors:
            want = describe(t.name, t.data_type, ["batch", *t.dims])  # type: ignore[list-item]
            if t.name not in found:
                problems.append(f"{kind} {want} missing (graph {kind}s: {sorted(found)})")
                continue
            data_type, dims = found[t.name]
            if data_type != t.data_type or not dims or not dims_match(t.dims, dims[1:]):
                problems.append(f"{kind} expected {want}, found {describe(t.name, data_type, dims)}")
            elif dims[0] is not None:
                problems.append(f"{kind} {t.name!r} has a fixed first dimension {dims[0]}; Triton batches "
                                "along it, so it must be dynamic")
    if problems:
        raise BuildError("SignatureMismatch", f"{where}: " + "; ".join(problems))
