"""Where the harness caches what it builds or installs: outside the repository, keyed by version,
and a file lock so that concurrent builders of the same piece (parallel test runs) wait for each other."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("PEAKSERVE_CACHE", Path.home() / ".cache" / "peakserve"))


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = 3600, poll_s: float = 0.5):
    """An exclusive flock on ``path`` (created if missing), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out waiting for the lock {path}") from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
