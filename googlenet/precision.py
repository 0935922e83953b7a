"""``--precision auto``: bf16 where this machine runs it faster than fp32, fp32 otherwise, and why.

bf16 is not a free win on a CPU. With AMX (Sapphire Rapids and later) oneDNN's bf16 GEMMs run several times the
fp32 rate; with AVX512-BF16 alone some hosts run them at half the fp32 rate, others (this project's AMD host) at
twice it, yet small convolutions (the 64x64 main job) can still be slower in bf16 there because of the casts around
them. A matmul probe therefore misleads: on the CPU the probe is the real thing, a few training steps of the model
at its batch and input size in both precisions (about 1 s at 64x64), and bf16 is chosen only if its step is at
least ``MIN_GAIN`` faster. On a GPU: bf16 where the GPU supports it (Ampere and later), fp16 with a gradient scaler
otherwise.

The CPU probe's verdict is kept (``PrecisionCache``): on a host where the two precisions are close the verdict
flips with the machine's load, and the same seed would then give other weights. It is decided once per machine and
setting, and a later run with the same key takes it without timing anything.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from .fileio import atomic_write_text

# bf16 must win by more than the probe's noise. It was 1.15 ("its rounding costs a little accuracy"), which proved
# too cautious: on the main job the probe said 1.14x and kept fp32 (epochs of 50-63 s, 87.55% held-out), while a
# run whose probe passed trained its epochs in bf16 in 41-46 s; bf16's own seed-0 run reached 87.50%. The 2-step
# probe on zeros understates bf16's gain on real batches.
MIN_GAIN = 1.05

CACHE_VERSION = 1
REPROBE_ENV = "GOOGLENET_REPROBE"  # "1": time again and overwrite the kept verdict, like --reprobe


def cpu_identity() -> str:
    """The CPU's model name and feature flags (what decides its bf16 speed); the platform's names elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor says it for all of them
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = " ".join(sorted((fields.get("flags") or fields.get("Features") or "").split()))
    return f"{model} | {os.cpu_count()} cpus | {flags}"


def probe_key(*, arch: str, input_size: int, batch_size: int, channels_last: bool, compile: bool) -> dict:
    """Everything the CPU probe's verdict depends on: the machine, torch, and the step it times."""
    return {"cpu": cpu_identity(), "torch": torch.__version__, "arch": arch, "input_size": int(input_size),
            "batch_size": int(batch_size), "channels_last": bool(channels_last), "compile": bool(compile)}


class PrecisionCache:
    """Kept probe verdicts: one small JSON file per key under ``$XDG_CACHE_HOME/googlenet/precision`` (or
    ``$GOOGLENET_PRECISION_CACHE``). A file that is unreadable, for another key or of another cache version is
    ignored (and rewritten by the next probe); a cache that cannot be written only costs a probe next time."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        if folder is None:
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "googlenet" / "precision"
            folder = os.environ.get("GOOGLENET_PRECISION_CACHE") or base
        self.folder = Path(folder)

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest[:24]}.json"

    def get(self, key: dict) -> Optional[dict]:
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
            ok = (entry["version"] == CACHE_VERSION and entry["key"] == key
                  and entry["precision"] in ("fp32", "bf16") and isinstance(entry["reason"], str))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return entry if ok else None

    def put(self, key: dict, precision: str, reason: str) -> None:
        entry = {"version": CACHE_VERSION, "key": key, "precision": precision, "reason": reason,
                 "probed": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path(key), json.dumps(entry, indent=1) + "\n")
        except OSError:
            pass


def resolve_precision(requested: str, device: torch.device | str,
                      step_seconds: Optional[Callable[[str], float]] = None, *, key: Optional[dict] = None,
                      cache: Optional[PrecisionCache] = None, reprobe: bool = False) -> tuple[str, str]:
    """(precision, reason). ``requested`` other than "auto" is returned as it is. ``step_seconds(precision)`` times
    one training step in that precision (the CPU probe); without it the CPU gets fp32. With a ``key`` the CPU
    verdict comes from the cache when it holds one (unless ``reprobe`` or $GOOGLENET_REPROBE=1), and a fresh
    verdict is written to it."""
    if requested != "auto":
        return requested, "as requested"
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {torch.cuda.get_device_name(device)} supports bf16"
        return "fp16", f"auto: {torch.cuda.get_device_name(device)} has no bf16; fp16 with a gradient scaler"
    if device.type != "cpu" or step_seconds is None:
        return "fp32", f"auto: fp32 on {device.type}"
    if key is None:
        return _probe(step_seconds)
    cache = cache or PrecisionCache()
    reprobe = reprobe or os.environ.get(REPROBE_ENV) == "1"
    kept = None if reprobe else cache.get(key)
    if kept is not None:
        return kept["precision"], f"{kept['reason']}; kept from the probe of {kept['probed']} in {cache.path(key)}"
    precision, reason = _probe(step_seconds)
    cache.put(key, precision, reason)
    return precision, f"{reason}; {'re-probed' if reprobe else 'fresh probe'}, kept in {cache.path(key)}"


def _probe(step_seconds: Callable[[str], float]) -> tuple[str, str]:
    fp32, bf16 = step_seconds("fp32"), step_seconds("bf16")
    gain = fp32 / bf16
    verdict = "bf16" if gain >= MIN_GAIN else "fp32"
    return verdict, (f"auto: a training step took {1000 * fp32:.0f} ms in fp32 and {1000 * bf16:.0f} ms in bf16 on "
                     f"this CPU ({gain:.2f}x; bf16 needs >= {MIN_GAIN}x)")


def time_train_step(model: torch.nn.Module, precision: str, *, batch_size: int, input_size: int,
                    channels_last: bool, device: torch.device, repeats: int = 2) -> float:
    """Best seconds of ``repeats`` training steps (after one warm-up) on a copy of ``model`` with a learning rate
    of 0: the model, the optimizer and the random number streams of the run are left as they were."""
    from .train.step import TrainStep

    state = torch.get_rng_state()
    try:
        net = copy.deepcopy(model).train()
        step = TrainStep(net, torch.optim.SGD(net.parameters(), lr=0.0), precision=precision,
                         channels_last=channels_last, device=device)
        x = torch.zeros(batch_size, 3, input_size, input_size, device=device)
        y = torch.zeros(batch_size, dtype=torch.long, device=device)
        step(x, y)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            step(x, y)
            best = min(best, time.perf_counter() - t)
        return best
    finally:
        torch.set_rng_state(state)
