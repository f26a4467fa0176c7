"""The optimized candidates made from the fp32 ONNX model: int8 dynamic, int8 static (QDQ), fp16.

Quantization happens after export, on the ONNX graph: exporting an already-quantized torch graph
is unreliable. Each maker writes one .onnx file; a maker that raises rejects only its candidate.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..api.spec import ModelDeploymentSpec
from .progress import Progress
from .runtime import CUDA, effective_providers

PRECISION = {"fp32": "fp32", "int8Dynamic": "int8", "int8Static": "int8", "fp16": "fp16"}
CALIBRATION_BATCH_ROWS = 64


@dataclass
class CandidateModel:
    """One candidate's ONNX file, made in the build's work directory."""

    name: str
    path: Path
    notes: dict = field(default_factory=dict)  # facts about the graph, kept in the manifest

    @property
    def precision(self) -> str:
        return PRECISION[self.name]


def serves_on_gpu(spec: ModelDeploymentSpec) -> bool:
    """Triton runs the model on a GPU: the pod has GPUs and some instance group is KIND_GPU."""
    return spec.serving.gpus > 0 and any(g.kind == "GPU" for g in spec.serving.instance_groups)


def fp16_refusal(spec: ModelDeploymentSpec, providers: Sequence[str]) -> str | None:
    """Why fp16 is not tried, or None. On CPU fp16 is emulated and slower: it only makes sense on a GPU."""
    if not serves_on_gpu(spec):
        return "serving is on CPU (serving.gpus 0 or CPU instance groups): fp16 only pays off on a GPU"
    if CUDA not in effective_providers(providers):
        return ("fp16 needs a GPU build (CUDAExecutionProvider unavailable); set build.gpus and use a "
                "builder image with onnxruntime-gpu")
    return None


def prepare_for_quantization(fp32: Path, out: Path) -> dict:
    """ORT's quant_pre_process (symbolic shape inference + graph optimization) before quantizing.

    Returns notes; when pre-processing fails, quantization proceeds from the plain fp32 model.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32), str(out))
        return {"preProcessed": True}
    except Exception as err:  # symbolic shape inference gives up on some graphs; quantizing still works
        out.write_bytes(fp32.read_bytes())
        return {"preProcessed": False, "preProcessError": f"{type(err).__name__}: {str(err)[:200]}"}


STATIC_INT8_OPS = ["MatMul", "Gemm", "Conv"]


def make_int8_dynamic(source: Path, out: Path) -> CandidateModel:
    """Weights int8 ahead of time, activations quantized per batch at run time. Needs no calibration."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weight scales, and 7-bit weights: onnxruntime's u8s8 int8 kernels on CPUs without VNNI
    # (AVX2 only) can saturate their 16-bit intermediate sums with full-range weights, which moved scores of
    # the test MLP by 0.11 at p99 on such a machine; reduce_range avoids it on every CPU.
    with _quiet_quantizer():
        quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    return CandidateModel("int8Dynamic", out, graph_notes(out))


class NpzCalibrationReader:
    """Feeds the real calibration set to quantize_static, batch by batch. Never random data."""

    def __init__(self, inputs: dict[str, np.ndarray], batch_rows: int = CALIBRATION_BATCH_ROWS,
                 on_batch: Callable[[int], None] | None = None):
        self.inputs, self.batch_rows = inputs, batch_rows
        self.rows = len(next(iter(inputs.values())))
        self.on_batch = on_batch  # called with each batch's row count (a progress counter)
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.rows, self.batch_rows):
            batch = {name: a[start:start + self.batch_rows] for name, a in self.inputs.items()}
            if self.on_batch:
                self.on_batch(len(next(iter(batch.values()))))
            yield batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def make_int8_static(source: Path, out: Path, calibration: dict[str, np.ndarray],
                     progress: Progress | None = None) -> CandidateModel:
    """QDQ, S8S8 (int8 activations and weights), MinMax ranges from the calibration set.

    Only the compute ops are quantized. A statically quantized Gather rounds every embedding row to
    one per-table scale fixed at calibration time; on the sample ranker that alone moved scores by
    up to 0.37, against 0.02 with the tables left fp32. The speed comes from the matmuls anyway.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(NpzCalibrationReader, CalibrationDataReader):
        pass

    progress = progress or Progress(quiet=True)
    rows = len(next(iter(calibration.values())))
    with progress.counter("calibration rows", rows) as bar, _quiet_quantizer():
        reader = Reader(calibration, on_batch=bar.advance)
        quantize_static(str(source), str(out), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        calibration_providers=["CPUExecutionProvider"],
                        op_types_to_quantize=STATIC_INT8_OPS,
                        per_channel=True, reduce_range=True,  # see make_int8_dynamic
                        # Merge ranges every 16 batches instead of holding every activation in memory.
                        extra_options={"CalibMaxIntermediateOutputs": 16})
    notes = graph_notes(out)
    notes["calibrationRows"] = reader.rows
    return CandidateModel("int8Static", out, notes)


def make_fp16(fp32: Path, out: Path) -> CandidateModel:
    """fp16 weights and math, fp32 inputs/outputs (keep_io_types) so the signature does not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(out))
    return CandidateModel("fp16", out, graph_notes(out))


def graph_notes(path: Path) -> dict:
    """Op counts and size of a candidate graph: what quantization actually changed."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = Tally(n.op_type for n in model.graph.node)
    weights = {i.name for i in model.graph.initializer}
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    # A Gather reading a dequantized (int8) table: an embedding lookup that lost precision.
    quantized_gathers = sum(1 for n in model.graph.node if n.op_type == "Gather" and n.input[0] in dequantized)
    return {"bytes": path.stat().st_size, "ops": dict(sorted(ops.items())), "quantizedGathers": quantized_gathers}


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ORT's quantizers log progress through the root logger at INFO; keep them to warnings."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)
