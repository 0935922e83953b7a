#!/usr/bin/env bash
# The accelerator check of issue 28, one command on a bare machine with only this repository:
#   bash tools/gpu_check.sh            (the figures; about 5-8 minutes on one H100, most of it compiling and the main job)
#   bash tools/gpu_check.sh --smoke    (toy sizes, any device: the suite runs this)
# It installs the project the way `make train` does (its own venv, nothing else downloaded), then prints one line of
# figures: training img/s of the paper net and googlenet_bn (bf16, channels_last, torch.compile), the shard loader's
# img/s, NCCL all-reduce bandwidth with several GPUs, and the main job's top-1 and wall time. Stopped after 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory install >/dev/null
exec timeout 600 .venv/bin/python tools/gpu_check.py "$@"
