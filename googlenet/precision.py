"""``--precision auto``: bf16 where this machine runs it faster than fp32, fp32 otherwise, and why.

bf16 is not a free win on a CPU. With AMX (Sapphire Rapids and later) oneDNN's bf16 GEMMs run several times the
fp32 rate; with AVX512-BF16 alone some hosts run them at half the fp32 rate, others (this project's AMD host) at
twice it, yet small convolutions (the 64x64 main job) can still be slower in bf16 there because of the casts around
them. A matmul probe therefore misleads: on the CPU the probe is the real thing, a few training steps of the model
at its batch and input size in both precisions (about 1 s at 64x64), and bf16 is chosen only if its step is at
least ``MIN_GAIN`` faster. On a GPU: bf16 where the GPU supports it (Ampere and later), fp16 with a gradient scaler
otherwise.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch

# bf16 must win by more than the probe's noise. It was 1.15 ("its rounding costs a little accuracy"), which proved
# too cautious: on the main job the probe said 1.14x and kept fp32 (epochs of 50-63 s, 87.55% held-out), while a
# run whose probe passed trained its epochs in bf16 in 41-46 s; bf16's own seed-0 run reached 87.50%. The 2-step
# probe on zeros understates bf16's gain on real batches.
MIN_GAIN = 1.05


def resolve_precision(requested: str, device: torch.device | str,
                      step_seconds: Optional[Callable[[str], float]] = None) -> tuple[str, str]:
    """(precision, reason). ``requested`` other than "auto" is returned as it is. ``step_seconds(precision)`` times
    one training step in that precision (the CPU probe); without it the CPU gets fp32."""
    if requested != "auto":
        return requested, "as requested"
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {torch.cuda.get_device_name(device)} supports bf16"
        return "fp16", f"auto: {torch.cuda.get_device_name(device)} has no bf16; fp16 with a gradient scaler"
    if device.type != "cpu" or step_seconds is None:
        return "fp32", f"auto: fp32 on {device.type}"
    fp32, bf16 = step_seconds("fp32"), step_seconds("bf16")
    gain = fp32 / bf16
    verdict = "bf16" if gain >= MIN_GAIN else "fp32"
    return verdict, (f"auto: a training step took {1000 * fp32:.0f} ms in fp32 and {1000 * bf16:.0f} ms in bf16 on "
                     f"this CPU ({gain:.2f}x; bf16 needs >= {MIN_GAIN}x)")


def time_train_step(model: torch.nn.Module, precision: str, *, batch_size: int, input_size: int,
                    channels_last: bool, device: torch.device, repeats: int = 2) -> float:
    """Best seconds of ``repeats`` training steps (after one warm-up) on a copy of ``model`` with a learning rate
    of 0: the model, the optimizer and the random number streams of the run are left as they were."""
    import copy

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
