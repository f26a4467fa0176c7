"""Image layers: gzip'd tars of a directory, or of what a directory changed relative to another.

A layer is streamed once: the tar bytes are hashed (its diff_id, which the config lists) while they
are compressed, and the compressed bytes are hashed (its digest, which the manifest lists).

A diff layer holds what ``new`` adds or changes relative to ``base`` (with their parent directories,
so that an unpacker never has to invent modes), and an OCI whiteout (``.wh.NAME``) for each path of
``base`` that ``new`` removed. Only the topmost removed path is whited out.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

WHITEOUT_PREFIX = ".wh."
# The runtime provides these; only the directories themselves belong in an image.
DEFAULT_EXCLUDE = ("dev/*", "proc/*", "sys/*", "run/*", "tmp/*")


@dataclass(frozen=True)
class Layer:
    path: Path          # the .tar.gz blob
    digest: str         # sha256 of the compressed blob
    diff_id: str        # sha256 of the uncompressed tar
    size: int           # compressed bytes
    unpacked_size: int  # uncompressed tar bytes

    def to_json(self) -> dict:
        return {"path": str(self.path), "digest": self.digest, "diff_id": self.diff_id,
                "size": self.size, "unpacked_size": self.unpacked_size}

    @classmethod
    def from_json(cls, d: dict) -> "Layer":
        return cls(Path(d["path"]), d["digest"], d["diff_id"], d["size"], d["unpacked_size"])


class _Hashing:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, inner):
        self.inner, self.sha, self.count = inner, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.count += len(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()


def excluded(rel: str, patterns: Iterable[str]) -> bool:
    """``dev/*`` excludes what is inside dev/, not dev/ itself."""
    for p in patterns:
        if p.endswith("/*"):
            if rel.startswith(p[:-1]) and rel != p[:-2]:
                return True
        elif rel == p or rel.startswith(p + "/"):
            return True
    return False


def walk(root: Path, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> list[str]:
    """Relative paths under ``root`` (directories before their contents, sorted), not following links."""
    exclude = tuple(exclude)
    out: list[str] = []

    def visit(rel: str) -> None:
        full = os.path.join(root, rel) if rel else str(root)
        for name in sorted(os.listdir(full)):
            child = f"{rel}/{name}" if rel else name
            if excluded(child, exclude):
                continue
            out.append(child)
            if stat.S_ISDIR(os.lstat(os.path.join(root, child)).st_mode):
                visit(child)

    visit("")
    return out


def _signature(st: os.stat_result, full: str) -> tuple:
    kind = stat.S_IFMT(st.st_mode)
    link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else None
    size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    # Directory mtimes change whenever an entry is added below; a directory counts as changed only
    # for its own mode and owner (its new entries bring it in as their parent anyway).
    mtime = 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
    return kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, mtime, link


def diff(base: Path, new: Path, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> tuple[list[str], list[str]]:
    """(paths of ``new`` to put in the layer, paths of ``base`` to white out)."""
    exclude = tuple(exclude)
    new_paths = walk(new, exclude)
    changed: list[str] = []
    for rel in new_paths:
        b, n = os.path.join(base, rel), os.path.join(new, rel)
        try:
            if _signature(os.lstat(b), b) == _signature(os.lstat(n), n):
                continue
        except FileNotFoundError:
            pass
        changed.append(rel)
    keep = set(changed)
    for rel in changed:  # parents, so that an unpacker sees their real modes and owners
        parent = os.path.dirname(rel)
        while parent and parent not in keep:
            keep.add(parent)
            parent = os.path.dirname(parent)
    present = set(new_paths)
    removed: list[str] = []
    for rel in walk(base, exclude):
        if rel in present or os.path.lexists(os.path.join(new, rel)):
            continue
        if any(rel.startswith(r + "/") for r in removed[-1:]):
            continue  # below a removed directory: its whiteout covers it
        removed.append(rel)
    order = {p: i for i, p in enumerate(new_paths)}
    return sorted(keep, key=order.__getitem__), removed


def whiteout_name(rel: str) -> str:
    head, tail = os.path.split(rel)
    return os.path.join(head, WHITEOUT_PREFIX + tail) if head else WHITEOUT_PREFIX + tail


def write_layer(root: Path, paths: list[str], out: Path, *, whiteouts: Iterable[str] = (),
                on_file: Callable[[int], None] | None = None, compresslevel: int = 6,
                normalize: bool = False) -> Layer:
    """Write ``paths`` (relative to ``root``, parents first) and ``whiteouts`` as a gzip'd tar at ``out``.

    ``normalize``: every entry owned by root with mtime 0, for a directory assembled at test time
    (its owners and times are those of whoever made it), so that the same content gives the same digest.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as fh:
        compressed = _Hashing(fh)
        # mtime=0 and no file name in the gzip header: the same tar gives the same blob.
        with gzip.GzipFile(filename="", fileobj=compressed, mode="wb", compresslevel=compresslevel,
                           mtime=0) as gz:
            raw = _Hashing(gz)
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in whiteouts:
                    info = tarfile.TarInfo(whiteout_name(rel))
                    info.mode = 0o644
                    tar.addfile(info)
                for i, rel in enumerate(paths):
                    info = tar.gettarinfo(os.path.join(root, rel), arcname=rel)
                    if info is None:  # a socket: nothing an image can carry
                        continue
                    info.uname = info.gname = ""  # numeric owners only, as the rootfs has them
                    if normalize:
                        info.uid = info.gid = info.mtime = 0
                    if info.isreg():
                        with open(os.path.join(root, rel), "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
                    if on_file and i % 500 == 0:
                        on_file(i)
    os.replace(tmp, out)
    return Layer(out, "sha256:" + compressed.sha.hexdigest(), "sha256:" + raw.sha.hexdigest(),
                 compressed.count, raw.count)
