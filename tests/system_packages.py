"""What the suite needs beyond the project's own install: Debian packages (.ci/system-packages installs them), and
test references pip installs with the test extra or make install. A test that lacks one is skipped locally and
fails under CI, where a missing package means the project's own files did not install it."""

from __future__ import annotations

import os

import pytest


def missing(what: str, packages: str, installer: str = "bash .ci/system-packages") -> None:
    """Ends the calling test: a failure under CI, a skip elsewhere. ``installer``: what installs ``packages``."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}: run {installer} (it installs {packages})")
    pytest.skip(f"{what} ({installer} installs {packages})")
