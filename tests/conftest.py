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


# What the machine lacks beyond pip, and the tests that will therefore skip (fail under CI): said once, up front.
SYSTEM_TOOLS = {"chromium": ("/usr/bin/chromium", "the browser tests (tests/test_serve_browser.py)"),
                "chromedriver": ("/usr/bin/chromedriver", "the browser tests (tests/test_serve_browser.py)"),
                "hey": ("hey", "the serving load test (googlenet bench serve)"),
                "curl": ("curl", "the http shard tests (tests/test_shards_remote.py)"),
                "a C compiler": ("cc", "the C kernel tests (LRN, resample, photometric)")}


def pytest_report_header(config):
    import os
    import shutil

    lacking = [(name, why) for name, (tool, why) in SYSTEM_TOOLS.items()
               if not (os.path.isfile(tool) if tool.startswith("/") else shutil.which(os.environ.get("CC", tool)
                                                                                      if tool == "cc" else tool))]
    if not lacking:
        return "system packages: all present (chromium, chromedriver, hey, curl, a C compiler); no test skips for them"
    lines = [f"system packages missing: {name}: {why} will skip" for name, why in lacking]
    return lines + ["enable them with: sudo bash .ci/system-packages"]
