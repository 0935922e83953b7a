"""Test-wide settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread for every test. The suite's tensors are small, so a second thread gains little, and on a
    busy 2-core machine two OpenMP threads that wait on each other were measured 10-100x slower (a 64x64 forward:
    4.7 s against 0.055 s). Results do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def own_precision_cache(tmp_path_factory):
    """The suite keeps its --precision auto verdicts to itself, never in the user's ~/.cache (subprocesses inherit
    the variable)."""
    import os

    previous = os.environ.get("GOOGLENET_PRECISION_CACHE")
    os.environ["GOOGLENET_PRECISION_CACHE"] = str(tmp_path_factory.mktemp("precision-cache"))
    yield
    if previous is None:
        os.environ.pop("GOOGLENET_PRECISION_CACHE", None)
    else:
        os.environ["GOOGLENET_PRECISION_CACHE"] = previous
