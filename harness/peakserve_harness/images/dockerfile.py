"""A Dockerfile variant that differs from the original only in its base image.

images/operator/Dockerfile names its base literally (the project's Dockerfile lint forbids a
build-arg base: tests/linters/test_dockerfiles.py), and that base cannot be pulled here. So the
builder writes a copy whose external ``FROM`` lines name the local Debian base instead, and checks
that nothing else changed: every other byte is the original's.
"""

from __future__ import annotations

import re

_FROM = re.compile(r"^(\s*FROM\s+(?:--platform=\S+\s+)?)(\S+)((?:\s+AS\s+(\S+))?\s*)$",
                   re.IGNORECASE | re.MULTILINE)


class DockerfileError(ValueError):
    """The Dockerfile cannot be rebased (no external base, or several different ones)."""


def external_bases(text: str) -> list[str]:
    """The images of the ``FROM`` lines that do not name an earlier stage, in order."""
    stages: set[str] = set()
    out = []
    for m in _FROM.finditer(text):
        image, stage = m.group(2), m.group(4)
        if image.lower() not in stages:
            out.append(image)
        if stage:
            stages.add(stage.lower())
    return out


def rebase(text: str, image: str) -> str:
    """``text`` with every external base replaced by ``image``.

    All external bases must be the same image (the builder's venv is copied into the final stage, so
    both must have the same interpreter at the same path); raises DockerfileError otherwise.
    """
    bases = set(external_bases(text))
    if len(bases) != 1:
        raise DockerfileError(f"expected one external base image, found {sorted(bases) or 'none'}")
    (original,) = bases
    stages: set[str] = set()

    def swap(m: re.Match) -> str:
        stage = m.group(4)
        name = m.group(2)
        if stage:
            stages.add(stage.lower())
        if name.lower() in stages - ({stage.lower()} if stage else set()) or name != original:
            return m.group(0)
        return m.group(1) + image + m.group(3)

    return _FROM.sub(swap, text)


def changed_lines(original: str, variant: str) -> list[tuple[str, str]]:
    """(original line, variant line) for each line that differs; both must have as many lines."""
    a, b = original.splitlines(), variant.splitlines()
    if len(a) != len(b):
        raise DockerfileError("the variant has a different number of lines")
    return [(x, y) for x, y in zip(a, b) if x != y]
