"""Where images and their pieces are cached (~/.cache/peakserve/images, or $PEAKSERVE_CACHE/images);
``locked`` makes concurrent builders of the same piece wait for each other."""

from __future__ import annotations

from pathlib import Path

from ..cache import cache_root, file_lock as locked

__all__ = ["images_root", "locked"]


def images_root() -> Path:
    return cache_root() / "images"
