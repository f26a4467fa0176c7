"""The probe file: a fixed batch of real inputs that stable and canary both answer.

Format (.npz): one array per model input tensor, by its name, rows along the first axis, and
optionally ``labels`` (0/1, one per row) for rankers. `peakserve build` writes one beside the
published model.onnx (drawn from the build's evaluation data); `peakserve analyze --probe` reads
it. One module owns the format, so the writer and the reader cannot drift apart.

The file is written byte-for-byte reproducibly (fixed zip timestamps, arrays in sorted order): the
build manifest records its digest, and the same build must publish the same bytes.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from ..render.analysis_job import PROBE_FILE

LABELS = "labels"
MAX_ROWS = 8192          # the largest ProbeAnalysis.rows: more would never be sent
FILENAME = PROBE_FILE  # where the operator's analysis Job looks for it
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class ProbeDataError(ValueError):
    """The probe file cannot be read, or does not fit the model."""


def write_probe(path: Path, inputs: Mapping[str, np.ndarray], labels: np.ndarray | None = None, *,
                max_rows: int = MAX_ROWS) -> int:
    """Write the first ``max_rows`` rows of ``inputs`` (and ``labels``) to ``path``; returns the rows.

    Labels are stored as int8 0/1. An input named ``labels`` keeps that name, and the labels are
    then left out (the reader would take them for the input).
    """
    if not inputs:
        raise ValueError("a probe needs at least one input array")
    counts = {name: len(a) for name, a in inputs.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"input arrays have different row counts {counts}")
    rows = min(next(iter(counts.values())), max_rows)
    arrays = {name: np.ascontiguousarray(np.asarray(a)[:rows]) for name, a in inputs.items()}
    if labels is not None and LABELS not in arrays:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) < rows:
            raise ValueError(f"{len(labels)} labels for {rows} rows")
        arrays[LABELS] = (labels[:rows] > 0.5).astype(np.int8)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, arrays[name], allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
    return rows


def read_probe(path: Path, input_names: list[str] | tuple[str, ...]
               ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(inputs by name, labels or None) from ``path``; every one of ``input_names`` must be there.

    Raises ProbeDataError when the file is missing or unreadable, an input is missing, or the
    arrays (labels included) do not have the same number of rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeDataError(f"probe file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ProbeDataError(f"probe file {path} cannot be read as .npz: {err}") from None
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise ProbeDataError(f"probe file {path.name} has no array for model input(s) {missing} "
                             f"(found {sorted(arrays)})")
    inputs = {n: arrays[n] for n in input_names}
    labels = arrays.get(LABELS) if LABELS not in input_names else None
    counts = {n: (len(a) if a.ndim else 0) for n, a in inputs.items()}
    if labels is not None:
        labels = labels.reshape(-1)
        counts[LABELS] = len(labels)
    if len(set(counts.values())) != 1:
        raise ProbeDataError(f"probe file {path.name}: arrays have different row counts {counts}")
    return inputs, labels
