"""What the suite needs from the machine beyond pip (.ci/system-packages installs it): a test that lacks it is
skipped locally and fails under CI, where a missing package means the project's own files did not install it."""

from __future__ import annotations

import os

import pytest


def missing(what: str, packages: str) -> None:
    """Ends the calling test: a failure under CI, a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}: run .ci/system-packages (it installs {packages})")
    pytest.skip(f"{what} (bash .ci/system-packages installs {packages})")
