"""The operator image, cached by content: built once per (base, Dockerfile, build context) and reused.

The key hashes everything the build reads: the base image's key, images/operator/Dockerfile, and the
files of the build context the Dockerfile copies (pyproject.toml, README.md, operator/), less what
.dockerignore keeps out (bytecode, egg-info). Any edit to the operator's code gives a new key, so a
test of the image always runs what the tree holds. Only the newest key is kept (each is ~90 MB).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

from . import operator_image
from .debian_base import Base
from .oci_archive import ArchiveInfo
from .progress import Progress
from .store import images_root, locked

CONTEXT = ("pyproject.toml", "README.md", "operator")
IGNORED_PARTS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc", ".pyo", ".pyd")
STAMP = "operator.json"


def _context_files(repo: Path) -> list[Path]:
    files: list[Path] = []
    for top in CONTEXT:
        path = repo / top
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files.extend(p for p in candidates
                     if not any(part in IGNORED_PARTS or part.endswith(".egg-info") for part in p.parts)
                     and p.suffix not in IGNORED_SUFFIXES)
    return files


def content_key(repo: Path, base: Base) -> str:
    h = hashlib.sha256()
    h.update(f"base={base.key}\n".encode())
    for path in [repo / "images" / "operator" / "Dockerfile", *_context_files(repo)]:
        h.update(f"{path.relative_to(repo)}\n".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _load(home: Path) -> tuple[ArchiveInfo, float] | None:
    try:
        d = json.loads((home / STAMP).read_text())
    except (FileNotFoundError, ValueError):
        return None
    info = ArchiveInfo(Path(d["path"]), d["name"], d["manifest_digest"], d["size"], d["unpacked_size"])
    return (info, d["build_s"]) if info.path.is_file() else None


def place(info: ArchiveInfo, out_dir: Path) -> ArchiveInfo:
    """The cached archive under ``out_dir`` too: a hard link where it can be (it is never modified)."""
    dst = out_dir / info.path.name
    dst.unlink(missing_ok=True)
    try:
        dst.hardlink_to(info.path)
    except OSError:
        shutil.copyfile(info.path, dst)
    return replace(info, path=dst)


def ensure(repo: Path, base: Base, progress: Progress) -> tuple[ArchiveInfo, float, bool]:
    """(archive, seconds its build took, built_now): the cached image for this tree, built if missing."""
    key = content_key(repo, base)
    home = images_root() / f"operator-{key}"
    with locked(home.parent / ".operator.lock"):
        cached = _load(home)
        if cached:
            progress.step(f"operator image cached by content ({home.name})")
            return (*cached, False)
        shutil.rmtree(home, ignore_errors=True)
        info, seconds = operator_image.build(repo, base, home, progress)
        shutil.rmtree(home / "work", ignore_errors=True)
        (home / STAMP).write_text(json.dumps({
            "key": key, "path": str(info.path), "name": info.name, "manifest_digest": info.manifest_digest,
            "size": info.size, "unpacked_size": info.unpacked_size, "build_s": seconds}, indent=1) + "\n")
        for stale in images_root().glob("operator-*"):
            if stale != home and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        return info, seconds, True
