"""ONNX Runtime sessions built the same way for every model a build compares.

Fair comparisons need identical settings: the same providers, the same fixed thread count, and
no spinning thread pools (see session_options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import BuildError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEFAULT_THREADS = 2
EVAL_CHUNK_ROWS = 1024  # bounds memory when a big evaluation set goes through a big model


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def effective_providers(requested: Sequence[str]) -> list[str]:
    """The requested providers this onnxruntime really has; ORT silently drops the others."""
    have = set(available_providers())
    used = [p for p in requested if p in have]
    return used or [CPU]


def session_options(threads: int = DEFAULT_THREADS):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: graph-optimizer notices are noise in a build log
    # Each session owns a thread pool; spinning threads would keep burning the cores after a run and
    # slow down whichever model runs next in the round-robin speed gate.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path: Path, providers: Sequence[str], threads: int = DEFAULT_THREADS):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=list(providers))


def run_dataset(path: Path, inputs: dict[str, np.ndarray], output_names: Sequence[str],
                providers: Sequence[str], threads: int = DEFAULT_THREADS, *, what: str) -> list[np.ndarray]:
    """All rows through the model in chunks; outputs in output_names order, concatenated."""
    try:
        session = open_session(path, providers, threads)
    except Exception as err:
        raise BuildError("InvalidModel", f"{what}: onnxruntime cannot load it: {type(err).__name__}: "
                                         f"{str(err).splitlines()[0][:300] if str(err) else ''}") from None
    rows = len(next(iter(inputs.values())))
    parts: list[list[np.ndarray]] = [[] for _ in output_names]
    for start in range(0, rows, EVAL_CHUNK_ROWS):
        feed = {name: a[start:start + EVAL_CHUNK_ROWS] for name, a in inputs.items()}
        for i, out in enumerate(session.run(list(output_names), feed)):
            parts[i].append(np.asarray(out))
    return [np.concatenate(p) for p in parts]
