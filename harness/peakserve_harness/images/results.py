"""DIR/images.json: per image, its name, archive, build time and sizes (merged across runs)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path


def du(path: Path) -> int:
    """Bytes of the regular files under ``path`` (hardlinks counted once)."""
    seen, total = set(), 0
    for p in path.rglob("*"):
        st = p.lstat()
        if p.is_file() and not p.is_symlink() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def record(out_dir: Path, image: str, entry: dict) -> Path:
    path = out_dir / "images.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    data.setdefault("images", {})[image] = {**entry, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                               time.gmtime())}
    data["host"] = {"cpus": __import__("os").cpu_count(), "buildah": shutil.which("buildah")}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def summary(image: str, entry: dict) -> str:
    return (f"{image}: {entry['name']} built in {entry.get('build_s')} s; archive "
            f"{mib(entry.get('archive_bytes'))}, layers unpacked {mib(entry.get('layers_unpacked_bytes'))}"
            f", rootfs on disk {mib(entry.get('rootfs_bytes'))}")
