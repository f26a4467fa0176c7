"""The published Triton model repository: built aside, then renamed into place in one step.

Layout under out_root/<hash>/:
    <model.name>/config.pbtxt
    <model.name>/<model.version>/model.onnx
    <model.name>/<model.version>/probe.npz   evaluation rows for the canary analysis (Triton ignores it)
    manifest.json

A Triton pod or a second build only ever sees either no <hash> directory or a complete one:
everything is written into a hidden staging directory on the same filesystem first, and
os.rename moves it into place atomically. A directory with a manifest.json is a finished build:
that is the build cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import BuildError

MANIFEST = "manifest.json"


def check_writable(out_root: Path) -> None:
    """Create out_root and prove a file can be written there, before any heavy work."""
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=out_root)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise BuildError("DestinationUnwritable",
                         f"artifact directory {out_root} is not writable: {err.strerror or err}") from None


def read_manifest(out_root: Path, build_hash: str) -> dict | None:
    """The manifest of a finished build of this hash, or None."""
    path = out_root / build_hash / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def make_staging(out_root: Path, build_hash: str) -> Path:
    """A hidden directory next to the final one (same filesystem, so the rename is atomic).
    The leading dot keeps it out of sight of a Triton that lists out_root."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{build_hash}.tmp-", dir=out_root))
    except OSError as err:
        raise BuildError("DestinationUnwritable", f"cannot create a staging directory in {out_root}: "
                                                  f"{err.strerror or err}") from None


def model_dir(repo: Path, name: str) -> Path:
    return repo / name


def write_json(path: Path, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _seal_tree(root: Path) -> None:
    """Before the rename makes it visible: readable by everyone (Triton runs as another user than
    the build Job, whatever the umask) and flushed to disk (a crash must not publish empty files)."""
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, 0o644)
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def publish(repo: Path, out_root: Path, build_hash: str) -> Path:
    """Rename the complete repository `repo` to out_root/<hash>; returns the published path.

    If another build of the same hash published first, its directory stays and ours is dropped:
    both are builds of identical inputs.
    """
    final = out_root / build_hash
    _seal_tree(repo)
    try:
        os.rename(repo, final)
    except OSError as err:
        if (final / MANIFEST).is_file():
            shutil.rmtree(repo, ignore_errors=True)
            return final
        raise BuildError("DestinationUnwritable", f"cannot publish {final}: {err.strerror or err}") from None
    try:  # make the new directory entry durable too
        fd = os.open(out_root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return final
