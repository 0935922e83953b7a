"""Starting ``googlenet serve`` in a subprocess for the serving tests, and small fixtures they share."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

import googlenet

PRE = {"input_size": 64, "resize_size": 73, "interpolation": "bilinear", "mean": [0.5, 0.45, 0.4],
       "std": [0.25, 0.2, 0.3]}
CLASSES = [f"class {c}" for c in "abcdefg"]


def make_weights(path: Path, arch: str = "googlenet", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = googlenet.create_model(arch, num_classes=len(CLASSES), aux_logits=False)
    googlenet.save_model(model, path, class_names=CLASSES, preprocessing=PRE)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(weights: Path, *flags: str, ready_timeout: float = 90.0):
    """Yields (base URL, process); stops the server (SIGTERM) on exit."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "googlenet", "serve", "--weights", str(weights), "--port", str(port),
                             "--backend", "eager", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/v2/health/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in time")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()
