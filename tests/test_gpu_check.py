"""tools/gpu_check.py, the prepared accelerator check, in its smoke mode on this machine's CPU: every part runs
(both training steps, the shard loader, the main job) and the one line carries each figure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[1]


def test_the_smoke_run_prints_one_line_of_figures():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--smoke", "--json"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary, raw = proc.stdout.strip().splitlines()[-2:]
    figures = json.loads(raw)
    assert re.fullmatch(r"gpu_check: .+ x\d+, torch \S+ \| train bf16 channels_last batch 4 at 64: googlenet \d+ "
                        r"img/s, googlenet_bn \d+ img/s \| shards loader \d+ img/s \(in-process\) \| nccl all-reduce "
                        r"(n/a \(1 GPU\)|[\d.]+ GB/s) \| main job top-1 [\d.]+% in \d+ s wall", summary), summary
    for key in ("googlenet_train_img_s", "googlenet_bn_train_img_s", "loader_img_s", "main_job_wall_s"):
        assert figures[key] > 0
    assert 0 <= figures["main_job_top1"] <= 1 and figures["compile"] is False
    assert figures["nccl_busbw_gb_s"] is None  # the smoke run skips NCCL
    assert subprocess.run(["bash", "-n", str(REPO / "tools" / "gpu_check.sh")]).returncode == 0
