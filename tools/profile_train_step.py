"""Where a training step's time goes, and whether torch.compile pays (issue 14; BENCHMARKS.md).

    PYTHONPATH=. python tools/profile_train_step.py --input-size 64 --precision bf16 [--compile]

For each arch: torch.profiler over a few TrainStep calls (forward with aux heads, loss, backward, fused AdamW, as
the main job runs them), its self CPU time grouped by operator family; with --compile, the first compiled step's
wall time (the compile) and the compiled steady-state step against eager, alternated in one process.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from googlenet.models import create_model
from googlenet.train.step import TrainStep

FAMILIES = (  # first match wins; names are aten ops as the CPU profiler reports them
    ("convolution backward", ("convolution_backward", "ConvolutionBackward")),
    ("convolution forward", ("mkldnn_convolution", "aten::_convolution", "aten::conv2d", "aten::convolution")),
    ("LRN (ours, forward+backward)", ("LRNFunction", "lrn")),
    ("max pooling", ("max_pool2d",)),
    ("matmul (fc, aux heads)", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer (fused AdamW)", ("fused_adam", "Optimizer.step")),
    ("ReLU", ("relu", "threshold", "clamp_min")),
    ("concat / copies / casts", ("aten::cat", "aten::copy_", "aten::to", "aten::_to_copy", "aten::clone",
                                 "aten::contiguous")),
    ("elementwise (add, mul, pow, div)", ("aten::add", "aten::mul", "aten::pow", "aten::div", "aten::sub")),
)


def family(name: str) -> str:
    for label, keys in FAMILIES:
        if any(k in name for k in keys):
            return label
    return "other"


def make_step(arch: str, precision: str, size: int, batch: int, compile: bool):
    model = create_model(arch, num_classes=10, aux_logits=True).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    step = TrainStep(model, opt, precision=precision, channels_last=True, compile=compile)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    return lambda: step(x, y)


def breakdown(run, steps: int) -> tuple[float, dict[str, float]]:
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    groups: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        groups[family(ev.key)] += ev.self_cpu_time_total / 1e3 / steps
    return sum(groups.values()), dict(groups)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--archs", nargs="+", default=["googlenet", "googlenet_bn"])
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"batch {a.batch_size}, {a.input_size}x{a.input_size}, {a.precision}, channels_last, fused AdamW, "
          f"{a.threads} threads; self CPU ms a step")
    tables = {arch: breakdown(make_step(arch, a.precision, a.input_size, a.batch_size, False), a.steps)
              for arch in a.archs}
    print("| family | " + " | ".join(a.archs) + " |")
    print("|---|" + "---|" * len(a.archs))
    for lab in [label for label, _ in FAMILIES] + ["other"]:
        cells = [f"{tables[arch][1].get(lab, 0.0):.1f} ({100 * tables[arch][1].get(lab, 0.0) / tables[arch][0]:.0f}%)"
                 for arch in a.archs]
        print(f"| {lab} | " + " | ".join(cells) + " |")
    print("| total | " + " | ".join(f"{tables[arch][0]:.1f}" for arch in a.archs) + " |")
    if a.compile:
        for arch in a.archs:
            eager = make_step(arch, a.precision, a.input_size, a.batch_size, False)
            compiled = make_step(arch, a.precision, a.input_size, a.batch_size, True)
            t0 = time.perf_counter()
            compiled()
            compile_s = time.perf_counter() - t0
            eager()
            compiled()  # a second compiled call: guards settle
            times = {"eager": 0.0, "compiled": 0.0}
            for _ in range(a.steps):
                for name, fn in (("eager", eager), ("compiled", compiled)):
                    t0 = time.perf_counter()
                    fn()
                    times[name] += time.perf_counter() - t0
            e, c = times["eager"] / a.steps, times["compiled"] / a.steps
            verdict = f"; pays after {compile_s / max(e - c, 1e-9):.0f} steps" if c < e else ": does not pay"
            print(f"{arch}: torch.compile first step {compile_s:.1f} s; steady step eager {1e3 * e:.0f} ms, "
                  f"compiled {1e3 * c:.0f} ms ({e / c:.2f}x){verdict}")


if __name__ == "__main__":
    main()
