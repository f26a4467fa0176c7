"""``python -m peakserve_harness.images build base|operator|triton|all --out DIR [--no-verify]``

Builds the images into DIR as OCI archives (import with ``ctr -n k8s.io images import FILE``),
checks each by running it from its unpacked rootfs (unless --no-verify), and records build times and
sizes in DIR/images.json. ``verify operator|triton ARCHIVE`` only checks an archive.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from . import debian_base, operator_cache, results, triton_image, verify
from .oci_archive import unpack
from .progress import Progress

REPO = Path(__file__).resolve().parents[3]


def _entry(info, build_s: float, **extra) -> dict:
    with tempfile.TemporaryDirectory(prefix="peakserve-size-") as tmp:
        unpack(info.path, Path(tmp) / "rootfs")  # what a node stores unpacked
        rootfs_bytes = results.du(Path(tmp) / "rootfs")
    return {"name": info.name, "archive": str(info.path), "manifest_digest": info.manifest_digest,
            "build_s": build_s, "archive_bytes": info.size, "layers_unpacked_bytes": info.unpacked_size,
            "rootfs_bytes": rootfs_bytes, **extra}


def build(what: str, out: Path, check: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress("base")
    base, built = debian_base.ensure(progress)
    entry = {"name": base.name, "archive": str(base.archive), "build_s": base.build_s, "cached": not built,
             "archive_bytes": base.size, "layers_unpacked_bytes": base.unpacked_size,
             "rootfs_bytes": results.du(base.rootfs), "packages": list(debian_base.PACKAGES)}
    results.record(out, "base", entry)
    print(results.summary("base", entry) + (" (cached)" if not built else ""), flush=True)
    targets = ["operator", "triton"] if what == "all" else [what] if what != "base" else []
    for target in targets:
        progress = Progress(target)
        cached = False
        if target == "operator":
            # Cached by content (the tests reuse it): rebuilt only when the operator's sources change.
            info, seconds, built = operator_cache.ensure(REPO, base, progress)
            info, cached = operator_cache.place(info, out), not built
        else:
            info, seconds = triton_image.build(base, out, progress)
        progress.step(f"built {info.path} in {seconds} s")
        entry = _entry(info, seconds, builder="buildah bud (vfs, chroot)" if target == "operator"
                       else "debootstrap base + OCI layer written by peakserve_harness.images", cached=cached)
        if check:
            progress.step("verifying: running it from the unpacked archive")
            entry["verified"] = (verify.verify_operator if target == "operator" else verify.verify_triton)(info.path)
            progress.step(f"verified: {json.dumps(entry['verified'])[:300]}")
        results.record(out, target, entry)
        print(results.summary(target, entry), flush=True)
    shutil.rmtree(out / "work", ignore_errors=True)
    print(f"results: {out / 'images.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peakserve_harness.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build images into --out")
    b.add_argument("what", choices=["base", "operator", "triton", "all"])
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--no-verify", action="store_true", help="skip running the built images")
    v = sub.add_parser("verify", help="run an image archive's checks")
    v.add_argument("what", choices=["operator", "triton"])
    v.add_argument("archive", type=Path)
    args = parser.parse_args(argv)
    if args.action == "build":
        return build(args.what, args.out.resolve(), not args.no_verify)
    check = verify.verify_operator if args.what == "operator" else verify.verify_triton
    print(json.dumps(check(args.archive), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
