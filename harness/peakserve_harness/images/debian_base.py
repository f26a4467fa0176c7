"""The base image: Debian bookworm (Python 3.11) from debootstrap, standing in for python:3.11-slim-bookworm.

The upstream base cannot be pulled here, so a minbase rootfs gets python3, python3-venv and
python3-pip (the Dockerfile runs ``python -m venv`` and ``pip wheel``), ca-certificates (as the
upstream slim image has) and libpython3.11 (the Triton python backend stub embeds it; sharing one
base keeps one base layer for both images). Docs, man pages and translations are removed as
debian:bookworm-slim removes them. ``python`` and ``pip`` are links in /usr/local/bin, as
upstream has them. The rootfs, its layer and its OCI archive are cached under
``images/base-<key>/``, the key being a hash of everything that shapes them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import debian_packages
from . import oci_archive, oci_image, oci_layer
from .progress import Progress, run
from .store import images_root, locked

SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = os.environ.get("PEAKSERVE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "libpython3.11")
RECIPE = 1  # bump when the post-processing below changes
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
RUN_CONFIG = oci_image.RunConfig(env=ENV, cmd=("python3",))
# The upstream image's names for the interpreter and pip (Debian has only python3 and pip3).
LINKS = {"usr/local/bin/python": "/usr/bin/python3", "usr/local/bin/pip": "/usr/bin/pip3"}
# Left by debootstrap, useless in an image (python:*-slim removes the same).
PRUNE = ("var/lib/apt/lists", "var/cache/apt/archives", "var/cache/debconf/templates.dat-old",
         "var/log")
# As debian:bookworm-slim (upstream python:*-slim's base): no docs, man pages or translations, but the
# copyright files stay. The same rules go to dpkg, so images built on this base stay slim too.
SLIM_EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                "/usr/share/groff/*", "/usr/share/lintian/*", "/usr/share/linda/*")
SLIM_INCLUDE = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
DPKG_SLIM = "etc/dpkg/dpkg.cfg.d/peakserve-slim"


@dataclass(frozen=True)
class Base:
    key: str
    rootfs: Path
    layer: oci_layer.Layer
    archive: Path
    name: str
    build_s: float  # seconds the cold build took (recorded when it was built)
    size: int
    unpacked_size: int




def key() -> str:
    recipe = {"suite": SUITE, "variant": VARIANT, "mirror": MIRROR, "packages": PACKAGES,
              "links": LINKS, "prune": PRUNE, "slim": [SLIM_EXCLUDE, SLIM_INCLUDE], "recipe": RECIPE}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"{SUITE}-{VARIANT}-{digest}"


def base_dir() -> Path:
    return images_root() / f"base-{key()}"


def image_name() -> str:
    return f"localhost/peakserve/debian-python:3.11-{key()}"


def dpkg_slim_config() -> str:
    return "".join([f"path-exclude {p}\n" for p in SLIM_EXCLUDE] + [f"path-include {p}\n" for p in SLIM_INCLUDE])


def slim(rootfs: Path) -> int:
    """Remove what SLIM_EXCLUDE matches and SLIM_INCLUDE does not (dpkg's glob: ``*`` spans ``/``);
    returns the number of files removed."""
    removed = 0
    for top in sorted({p.split("*")[0].rstrip("/") for p in SLIM_EXCLUDE}):
        root = rootfs / top.lstrip("/")
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in filenames + links:
                path = "/" + os.path.relpath(os.path.join(dirpath, name), rootfs)
                if any(fnmatch.fnmatchcase(path, p) for p in SLIM_EXCLUDE) and \
                        not any(fnmatch.fnmatchcase(path, p) for p in SLIM_INCLUDE):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
            for name in dirnames:  # emptied directories go too
                full = os.path.join(dirpath, name)
                if os.path.isdir(full) and not os.path.islink(full) and not os.listdir(full):
                    os.rmdir(full)
    return removed


def _finish_rootfs(rootfs: Path) -> None:
    slim(rootfs)
    (rootfs / DPKG_SLIM).write_text(dpkg_slim_config())
    for rel, target in LINKS.items():
        link = rootfs / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(target, link)
    for rel in PRUNE:
        path = rootfs / rel
        if path.is_dir():
            for entry in path.iterdir():
                # keep apt's lock and partial/ directories: apt-get expects them
                if entry.is_dir() and not entry.is_symlink():
                    if entry.name != "partial":
                        shutil.rmtree(entry)
                elif entry.name != "lock":
                    entry.unlink()
        elif path.exists():
            path.unlink()
    # debootstrap copies the host's resolver and name; the runtime mounts its own.
    (rootfs / "etc" / "resolv.conf").write_text("")
    (rootfs / "etc" / "hostname").write_text("localhost\n")


def load() -> Base | None:
    stamp = base_dir() / "base.json"
    try:
        d = json.loads(stamp.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if d.get("key") != key() or not Path(d["archive"]).is_file():
        return None
    return Base(d["key"], Path(d["rootfs"]), oci_layer.Layer.from_json(d["layer"]), Path(d["archive"]),
                d["name"], d["build_s"], d["size"], d["unpacked_size"])


def ensure(progress: Progress) -> tuple[Base, bool]:
    """The cached base, building it first when missing; returns (base, built_now)."""
    base = load()
    if base:
        return base, False
    home = base_dir()
    with locked(home.parent / f".{home.name}.lock"):
        base = load()
        if base:
            return base, False
        debian_packages.ensure({"debootstrap": "debootstrap"}, log=progress.step)
        t0 = time.monotonic()
        shutil.rmtree(home, ignore_errors=True)
        rootfs = home / "rootfs"
        log = home / "build.log"
        run(["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE,
             str(rootfs), MIRROR], progress, log, timeout=1800, label="debootstrap")
        _finish_rootfs(rootfs)
        progress.step("writing the base layer")
        paths = oci_layer.walk(rootfs)
        layer = oci_layer.write_layer(rootfs, paths, home / "layer.tar.gz",
                                      on_file=lambda i: progress.update(f"layer: {i}/{len(paths)} entries"))
        archive = home / "base.oci.tar"
        info = oci_archive.write_image(home / "layout", archive, image_name(), [layer], RUN_CONFIG,
                                       [f"debootstrap --variant={VARIANT} --include={','.join(PACKAGES)} "
                                        f"{SUITE} {MIRROR}"])
        shutil.rmtree(home / "layout", ignore_errors=True)
        base = Base(key(), rootfs, layer, archive, image_name(), round(time.monotonic() - t0, 1),
                    info.size, info.unpacked_size)
        stamp = {"key": base.key, "rootfs": str(rootfs), "layer": layer.to_json(), "archive": str(archive),
                 "name": base.name, "build_s": base.build_s, "size": base.size,
                 "unpacked_size": base.unpacked_size}
        (home / "base.json").write_text(json.dumps(stamp, indent=1) + "\n")
        return base, True
