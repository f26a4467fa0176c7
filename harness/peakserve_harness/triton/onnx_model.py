"""Triton python-backend model that serves the ``model.onnx`` next to it with onnxruntime (CPU).

This file is not imported by peakserve: ``peakserve_harness.triton.python_backend.local_repository`` copies
it as ``<model>/<version>/model.py`` so that the local ``tritonserver`` (which has only the python
backend) can serve a built repository's ONNX artifact with the production config's io, batching
and warmup. It runs inside Triton's python backend stub, where ``triton_python_backend_utils``,
``numpy`` and ``onnxruntime`` are importable.

Like the production onnxruntime backend, loading fails when the config's inputs and outputs do not
match the ONNX graph (names, element types, fixed dimensions, a dynamic batch dimension when
``max_batch_size > 0``), so a mismatched artifact fails here as it would in production.

Intra-op threads: the model parameter ``intra_op_threads``, else ``$PEAKSERVE_ORT_INTRA_OP_THREADS``,
else 1.
"""

import json
import os
import time

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

THREADS_PARAMETER = "intra_op_threads"
THREADS_ENV = "PEAKSERVE_ORT_INTRA_OP_THREADS"
# Autoscaling tests on CPU-only machines: each executed batch also waits this long, as a GPU kernel
# would, without using a CPU core. Capacity then grows with replicas even on 2 cores. Unset: no wait.
SIMULATED_GPU_ENV = "PEAKSERVE_SIMULATED_GPU_MS"

# Triton config data_type -> onnxruntime's type string.
ORT_TYPE = {
    "TYPE_BOOL": "tensor(bool)",
    "TYPE_UINT8": "tensor(uint8)", "TYPE_UINT16": "tensor(uint16)",
    "TYPE_UINT32": "tensor(uint32)", "TYPE_UINT64": "tensor(uint64)",
    "TYPE_INT8": "tensor(int8)", "TYPE_INT16": "tensor(int16)",
    "TYPE_INT32": "tensor(int32)", "TYPE_INT64": "tensor(int64)",
    "TYPE_FP16": "tensor(float16)", "TYPE_FP32": "tensor(float)", "TYPE_FP64": "tensor(double)",
    "TYPE_BF16": "tensor(bfloat16)", "TYPE_STRING": "tensor(string)",
}


def _check_io(kind, configured, graph, batched):
    """Raise ValueError when a configured tensor does not match the graph's (the ORT backend would)."""
    by_name = {t.name: t for t in graph}
    problems = []
    for t in configured:
        name, data_type = t["name"], t["data_type"]
        g = by_name.get(name)
        if g is None:
            problems.append(f"{kind} '{name}' is not in the ONNX graph (it has {sorted(by_name)})")
            continue
        if ORT_TYPE.get(data_type) != g.type:
            problems.append(f"{kind} '{name}': config says {data_type}, the ONNX graph has {g.type}")
        dims = [int(d) for d in t.get("reshape", {}).get("shape", t["dims"])]
        shape = list(g.shape)
        if batched:
            if not shape:
                problems.append(f"{kind} '{name}': max_batch_size > 0 but the ONNX tensor is a scalar")
                continue
            if isinstance(shape[0], int) and shape[0] > 0:
                problems.append(f"{kind} '{name}': max_batch_size > 0 but the ONNX batch dimension "
                                f"is fixed at {shape[0]}")
            shape = shape[1:]
        if len(shape) != len(dims) or any(
                isinstance(s, int) and s > 0 and d > 0 and s != d for s, d in zip(shape, dims)):
            problems.append(f"{kind} '{name}': config dims {dims} do not match the ONNX shape "
                            f"{list(g.shape)}")
    if kind == "input":
        missing = sorted(set(by_name) - {t["name"] for t in configured})
        if missing:
            problems.append(f"the ONNX graph needs inputs {missing} that the config does not declare")
    if problems:
        raise ValueError("; ".join(problems))


class TritonPythonModel:
    def initialize(self, args):
        if int(np.__version__.split(".")[0]) >= 2:
            # The stub's pybind11 numpy bindings (nvidia-pytriton 0.7.0) mangle numpy 2 tensors.
            raise RuntimeError(f"numpy {np.__version__} in the python backend stub's environment "
                               f"({np.__file__}): it needs numpy<2")
        config = json.loads(args["model_config"])
        self.name = config.get("name", args.get("model_name", "?"))
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [t["name"] for t in config.get("input", [])]
        self.outputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"]))
                        for t in config.get("output", [])]

        parameter = config.get("parameters", {}).get(THREADS_PARAMETER, {}).get("string_value", "")
        threads = int(parameter or os.environ.get(THREADS_ENV) or 1)
        self.simulated_gpu_s = float(os.environ.get(SIMULATED_GPU_ENV) or 0) / 1000.0
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1

        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(here, "model.onnx")
        if not os.path.exists(path):
            path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        _check_io("input", config.get("input", []), self.session.get_inputs(), self.batched)
        _check_io("output", config.get("output", []), self.session.get_outputs(), self.batched)
        pb_utils.Logger.log_info(
            f"peakserve onnx model '{self.name}': {path} on CPUExecutionProvider, "
            f"intra_op_threads={threads}")

    def _feeds(self, request):
        feeds = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                feeds[name] = tensor.as_numpy()
        return feeds

    def _run(self, feeds):
        names = [name for name, _ in self.outputs]
        results = self.session.run(names, feeds)
        if self.simulated_gpu_s:
            time.sleep(self.simulated_gpu_s)
        return {name: np.asarray(value).astype(dtype, copy=False)
                for (name, dtype), value in zip(self.outputs, results)}

    def _respond(self, outputs):
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(outputs[name]))
                            for name, _ in self.outputs])

    def _concatenable(self, feeds):
        """Same inputs and the same non-batch shapes in every request: one run for all of them."""
        if not self.batched or len(feeds) < 2:
            return False
        first = feeds[0]
        for f in feeds[1:]:
            if f.keys() != first.keys():
                return False
            for name, value in f.items():
                if value.ndim < 1 or value.shape[1:] != first[name].shape[1:] \
                        or value.dtype != first[name].dtype:
                    return False
        return all(len({f[n].shape[0] for n in f}) == 1 for f in feeds)

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds = []
        for i, request in enumerate(requests):
            try:
                feeds.append(self._feeds(request))
            except Exception as e:  # noqa: BLE001 - reported to the client
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
                feeds.append(None)
        live = [i for i, f in enumerate(feeds) if f is not None]

        if self._concatenable([feeds[i] for i in live]):
            sizes = [next(iter(feeds[i].values())).shape[0] for i in live]
            merged = {n: np.concatenate([feeds[i][n] for i in live]) for n in feeds[live[0]]}
            try:
                outputs = self._run(merged)
                if all(v.ndim >= 1 and v.shape[0] == sum(sizes) for v in outputs.values()):
                    offsets = np.cumsum(sizes)[:-1]
                    parts = {n: np.split(v, offsets) for n, v in outputs.items()}
                    for k, i in enumerate(live):
                        responses[i] = self._respond({n: parts[n][k] for n in parts})
                    return responses
            except Exception:  # noqa: BLE001 - fall back to one run per request below
                pass

        failures = []
        for i in live:
            try:
                responses[i] = self._respond(self._run(feeds[i]))
            except Exception as e:  # noqa: BLE001 - reported to the client
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
                failures.append(e)
        if failures and len(failures) == len(requests):
            # Raised, the python backend fails the whole batch and Triton counts the requests in
            # nv_inference_request_failure, as the onnxruntime backend does; error responses would be
            # counted as successes.
            raise pb_utils.TritonModelException(str(failures[0]))
        return responses

    def finalize(self):
        self.session = None
