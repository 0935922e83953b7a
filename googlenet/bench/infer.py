"""``googlenet bench infer``: the project's inference paths beside torchvision eager and ONNX Runtime.

References (what users run today): torchvision's googlenet, eager fp32 in NCHW and in channels_last, and ONNX
Runtime fp32 running torchvision's model exported to ONNX. Project: ``optimize_for_inference`` for each precision
asked, on its fastest backends. Rows at batch 1 give the latency. With ``weights`` (a model trained on the embedded
Fashion-MNIST), every bf16 / int8 row carries its top-1 agreement with fp32 over the 2,000 held-out images.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .common import Contender, add_compute, add_ratios, forward_macs, matmul_peaks, measure

ORT_REFERENCE = "onnxruntime fp32 (torchvision export)"
# (precision, backend) pairs the project rows run by default: each precision on the backends that are fast for it.
PROJECT_PATHS = (("fp32", "eager"), ("fp32", "onnxruntime"), ("bf16", "eager"), ("int8", "onnxruntime"))


def torchvision_ort_session(size: int):
    """ONNX Runtime on torchvision's googlenet exported as users do (torch.onnx.export, dynamic batch)."""
    import onnxruntime as ort
    import torchvision

    from ..inference import ort_session_options

    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    with tempfile.TemporaryDirectory(prefix="googlenet-bench-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(tmp, "torchvision_googlenet.onnx")
        torch.onnx.export(tv, (torch.randn(1, 3, size, size),), path, dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        with open(path, "rb") as f:
            data = f.read()
    return ort.InferenceSession(data, ort_session_options(), providers=["CPUExecutionProvider"])


def held_out_agreement(model: nn.Module, paths: list[tuple[str, str]], batch_size: int = 50) -> dict[str, float]:
    """Top-1 agreement with the fp32 eager predictor on the embedded held-out set (2,000 images), per path.

    int8 is calibrated on 256 training images (never on the held-out ones it is scored on).
    """
    from ..data.embedded import load_fashion
    from ..data.transforms import array_batch
    from ..inference import optimize_for_inference

    train, held = load_fashion()
    pre = model.preprocessing
    size, mean, std = int(pre["input_size"]), float(pre["mean"][0]), float(pre["std"][0])
    calibration = array_batch(train.images[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
                                           [:256]], size, mean, std)
    fp32 = optimize_for_inference(model, precision="fp32", backend="eager")
    others = {f"{p}/{b}": optimize_for_inference(model, precision=p, backend=b, calibration=calibration)
              for p, b in paths}
    same = {k: 0 for k in others}
    for i in range(0, len(held), batch_size):
        x = array_batch(held.images[i:i + batch_size], size, mean, std)
        want = fp32(x).argmax(1)
        for k, predictor in others.items():
            same[k] += int((predictor(x).argmax(1) == want).sum())
    return {k: round(v / len(held), 4) for k, v in same.items()}


def bench_infer(*, model: nn.Module, batch_size: int = 32, input_size: int = 224, precisions=("fp32", "bf16", "int8"),
                rounds: int = 5, latency: bool = True, compile: bool = False, trained: bool = False,
                progress=None) -> tuple[list[dict], list[str]]:
    import torchvision

    from ..inference import optimize_for_inference

    notes: list[str] = []
    batches = [batch_size] + ([1] if latency and batch_size != 1 else [])
    # Smooth normalised images (upsampled noise): activations like a photograph's, for timing and calibration.
    x = F.interpolate(torch.randn(batch_size, 3, 7, 7, generator=torch.Generator().manual_seed(0)), size=input_size,
                      mode="bilinear", align_corners=False)
    inputs = {b: x if b == batch_size else x[:1].clone() for b in batches}
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    tv_cl = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    tv_cl = tv_cl.to(memory_format=torch.channels_last)

    def eager(m, t):
        def run():
            with torch.inference_mode():
                return m(t)
        return run

    calls = {b: 5 if b == 1 else 1 for b in batches}
    contenders: list[Contender] = []
    for b in batches:
        contenders += [Contender("torchvision eager fp32 NCHW", "reference", "fp32", b, eager(tv, inputs[b]), calls[b]),
                       Contender("torchvision eager fp32 channels_last", "reference", "fp32", b,
                                 eager(tv_cl, inputs[b].contiguous(memory_format=torch.channels_last)), calls[b])]
    try:
        ort_ref = torchvision_ort_session(input_size)
        for b in batches:
            contenders.append(Contender(ORT_REFERENCE, "reference", "fp32", b,
                                        (lambda f={"images": inputs[b].numpy()}: ort_ref.run(None, f)), calls[b]))
    except ImportError:
        notes.append("onnxruntime is not installed: the ONNX Runtime rows are skipped (pip install onnxruntime)")

    paths = [(p, b) for p, b in PROJECT_PATHS if p in precisions]
    if compile:
        paths += [(p, "compile") for p in ("fp32", "bf16") if p in precisions]
    if "onnxruntime" in {b for _, b in paths} and not _has_ort():
        paths = [(p, b) for p, b in paths if b != "onnxruntime"]
    agreement: dict[str, object] = {}
    if trained and any(p != "fp32" for p, _ in paths):
        if progress:
            progress("top-1 agreement on the 2,000 held-out images")
        agreement = held_out_agreement(model, [(p, b) for p, b in paths if p != "fp32"])
    calibration = x  # timing only; held_out_agreement calibrates on training images
    for p, backend in paths:
        if progress:
            progress(f"preparing {p}/{backend}")
        predictor = optimize_for_inference(model, precision=p, backend=backend, calibration=calibration)
        extra: dict = {"backend": backend}
        if p != "fp32":
            extra["top1_agreement"] = agreement.get(f"{p}/{backend}") if trained else \
                "not measured: no trained weights (--weights W, a model trained on the embedded set)"
        name = f"googlenet {backend} {p}" + (" (BN folded, channels_last)" if backend != "onnxruntime" else
                                             " (BN folded)")
        for b in batches:
            contenders.append(Contender(name, "project", p, b, (lambda f=predictor, t=inputs[b]: f(t)), calls[b],
                                        extra=dict(extra)))
    rows = measure(contenders, rounds, ORT_REFERENCE, progress=progress)
    peaks = matmul_peaks(progress)
    tv_macs, our_macs = forward_macs(tv, input_size), forward_macs(model, input_size)
    add_compute(rows, tv_macs, our_macs, 2.0, peaks)
    # Per multiply-add: the paper's net does ~5% more work per image than torchvision's; compare work rates.
    add_ratios(rows, ORT_REFERENCE, key="gflops", label=ORT_REFERENCE + " per multiply-add")
    notes.append(f"matmul 2048^3 peak in this run: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} "
                 f"GFLOP/s; GFLOP/s = 2 x multiply-adds x images/s ({our_macs / 1e6:.0f}M for the project model, "
                 f"{tv_macs / 1e6:.0f}M for torchvision's)")
    arch = getattr(model, "arch_name", None) or (getattr(model, "metadata", None) or {}).get("arch")
    notes.append(f"project model: {arch}, {model.num_classes} classes, {'trained weights' if trained else 'random'}"
                 f"; references: torchvision googlenet, 1000 classes, random weights; input {input_size}x{input_size}")
    notes.append("goals: project fp32 >= 1.0x and fastest precision >= 1.5x ONNX Runtime fp32 (batch "
                 f"{batch_size}) at >= 99% top-1 agreement; batch-1 latency <= ONNX Runtime fp32's")
    return rows, notes


def _has_ort() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
