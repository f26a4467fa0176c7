"""The fault suite (`make test-faults`): the session's real control plane and operator come from the
integration suite's fixtures; every test here is marked `faults` and kept out of `make test`."""

from __future__ import annotations

import pytest

from integration.conftest import cluster, kubectl, ns, operator  # noqa: F401  (fixtures)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)
