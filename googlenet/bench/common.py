"""What every benchmark shares: alternating timed rounds, the machine and versions, result rows and the table.

Contenders run in ONE process, one after another inside each round (A B C, A B C, ...) after a warm-up call each, so
a slow spell of a shared machine hits all of them rather than one: compare ratios from one run, not figures
across runs. Each row reports the median over rounds and the spread = (slowest - fastest) / median round.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


@dataclass
class Contender:
    name: str
    role: str  # "project" | "reference"
    precision: str
    batch_size: int  # images per call
    run: Callable[[], object]  # one timed call
    calls: int = 1  # calls per round (several for short batch-1 calls, to lift them above timer noise)
    extra: dict = field(default_factory=dict)  # backend, notes, top1_agreement, ...
    times: list[float] = field(default_factory=list)  # seconds per call, one per round


def row(c: Contender) -> dict:
    med = statistics.median(c.times)
    return {"name": c.name, "role": c.role, "precision": c.precision, "batch_size": c.batch_size,
            "images_per_s": round(c.batch_size / med, 2), "ms_per_batch": round(1000 * med, 2),
            "spread": round((max(c.times) - min(c.times)) / med, 3), "rounds": len(c.times), **c.extra}


def measure(contenders: list[Contender], rounds: int, *references: str,
            progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """A warm-up call for each contender, then ``rounds`` rounds in which every contender runs once, in turn; then
    one row per contender with its ratios against each of ``references``."""
    for c in contenders:
        if progress:
            progress(f"warm-up: {c.name}")
        c.run()
    for r in range(rounds):
        if progress:
            progress(f"round {r + 1}/{rounds}")
        for c in contenders:
            start = time.perf_counter()
            for _ in range(c.calls):
                c.run()
            c.times.append((time.perf_counter() - start) / c.calls)
    rows = [row(c) for c in contenders]
    for reference in references:
        add_ratios(rows, reference)
    return rows


def add_ratios(rows: list[dict], reference: str, key: str = "images_per_s", label: Optional[str] = None) -> None:
    """Adds ``ratios[label or reference] = key / the reference's`` (images/s by default) to every row, against the
    reference row of the same batch size (so batch-1 rows compare latencies)."""
    refs = {r["batch_size"]: r for r in rows if r["name"] == reference and key in r}
    for r in rows:
        ref = refs.get(r["batch_size"])
        if ref is not None and key in r:
            r.setdefault("ratios", {})[label or reference] = round(r[key] / ref[key], 3)


def proc_status_kib(field: str, pid: int | str = "self") -> Optional[int]:
    """A memory line of Linux's /proc/<pid>/status (VmRSS, VmHWM, ...) in KiB; None where it cannot be read."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def machine() -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"cpu": model, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "gpu": gpu,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_average": load}


def versions() -> dict:
    import numpy
    import PIL
    import torchvision

    from .. import __version__

    out = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "numpy": numpy.__version__, "pillow": PIL.__version__, "googlenet": __version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        out["onnxruntime"] = None
    return out


def format_table(rows: list[dict], notes: list[str]) -> str:
    head = f"{'name':<52} {'role':<9} {'prec':<5} {'batch':>5} {'img/s':>8} {'ms/batch':>9} {'spread':>6}  extra"
    lines = [head, "-" * len(head)]
    for r in rows:
        lead = f"{r['name']:<52} {r['role']:<9} {r['precision']:<5} {r['batch_size']:>5}"
        if "images_per_s" not in r:
            lines.append(f"{lead}  skipped: {r.get('note', '')}")
            continue
        extra = [f"{x:.2f}x {ref}" for ref, x in (r.get("ratios") or {}).items()]
        if "top1_agreement" in r:
            agree = r["top1_agreement"]
            extra.append(f"top-1 agreement {agree:.4f}" if isinstance(agree, float) else f"agreement: {agree}")
        lines.append(f"{lead} {r['images_per_s']:>8.1f} {r['ms_per_batch']:>9.1f} {r['spread']:>6.2f}  "
                     f"{'; '.join(extra)}")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def forward_macs(model: torch.nn.Module, input_size: int, with_aux: bool = False, train_mode: bool = False) -> int:
    """Multiply-adds of one image through ``model`` (convolutions and linear layers), counted with forward hooks.
    with_aux: our models' aux heads; train_mode: for models that run their aux heads in train mode (torchvision)."""
    import copy
    import inspect

    counter = {"macs": 0}

    def hook(mod, inp, out) -> None:
        if isinstance(mod, torch.nn.Conv2d):
            counter["macs"] += out.numel() * (mod.in_channels // mod.groups) * mod.weight[0, 0].numel()
        elif isinstance(mod, torch.nn.Linear):
            counter["macs"] += out.numel() * mod.in_features

    m = copy.deepcopy(model).float().train(train_mode)
    handles = [mod.register_forward_hook(hook) for mod in m.modules()
               if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            x = torch.randn(2, 3, input_size, input_size)  # 2: BatchNorm in train mode needs more than one value
            m(x, with_aux=True) if with_aux and "with_aux" in inspect.signature(m.forward).parameters else m(x)
    finally:
        for h in handles:
            h.remove()
    return counter["macs"] // 2  # two images went through


def matmul_peaks(progress: Optional[Callable[[str], None]] = None) -> dict[str, float]:
    """The machine's attainable GFLOP/s in fp32 and bf16 right now, in the same process as the rows compared with it:
    the best of 2048^3 matmuls repeated for 1.5 s (oneDNN / MKL GEMM, the kernel convolutions reduce to)."""
    if progress:
        progress("matmul peak")
    peaks, size = {}, 2048
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=g).to(dtype)
        b = torch.randn(size, size, generator=g).to(dtype)
        torch.mm(a, b)  # warm-up
        best, started = float("inf"), time.perf_counter()
        while time.perf_counter() - started < 1.5:
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
        peaks[precision] = 2 * size ** 3 / best / 1e9
    return peaks


def add_compute(rows: list[dict], reference_macs: int, project_macs: int, flops_per_mac: float,
                peaks: dict[str, float]) -> None:
    """Adds to each row its achieved GFLOP/s (``flops_per_mac`` x multiply-adds x images/s: 2 for inference, 6 for a
    training step, forward + backward) and that as a fraction of the matmul peak of its precision (int8 rows:
    against the fp32 peak, the only GEMM peak PyTorch measures here). The MACs are per image, by the row's role."""
    for r in rows:
        if "images_per_s" not in r:
            continue
        r["macs_per_image"] = macs = reference_macs if r["role"] == "reference" else project_macs
        r["gflops"] = round(flops_per_mac * macs * r["images_per_s"] / 1e9, 1)
        peak = peaks.get(r["precision"]) or peaks.get("fp32")
        if peak:
            r["of_peak"] = round(r["gflops"] / peak, 3)
