"""Export a model for deployment: ONNX (checked with onnx.checker and ONNX Runtime) and TorchScript.

Both exports hold the inference graph only: images (N x 3 x H x W, normalised as ``model.preprocessing`` says) ->
logits (N x classes). The auxiliary heads are training-only (paper section 5: "discarded at inference") and are
left out of the graph.

Which ONNX exporter: torch 2.14 offers the TorchScript-based exporter (``dynamo=False``) and the torch.export-based
one (``dynamo=True``, its default). Both export every max pool with ``ceil_mode=1`` and agree with PyTorch under ONNX
Runtime at 224, 160 and 299 (where ceil rounding changes the map sizes: 160 -> 80-40-20-10-5, 299 ->
150-75-38-19-10), measured on this project's machine (see docs/weights.md). The TorchScript-based one is the
default here because it exports in about a third of the time on a 2-core CPU and accepts opsets 11-20 (the dynamo
exporter needs opset >= 18, which older runtimes and TensorRT 8.x lack). ``dynamo=True`` selects the other.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .errors import UserError, one_line
from .fileio import atomic_path
from .models import unwrap_model
from .models.lrn import onnx_lrn

FORMATS = ("onnx", "torchscript")
# MaxPool's ceil_mode arrived in opset 10; 11 is the oldest we test. 20 is the TorchScript exporter's newest.
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 11, 20, 17
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 64, 2048
TOLERANCE = 1e-4  # max abs difference of the logits, exported vs PyTorch
PIP_HINT = 'pip install "googlenet[export]"'


@dataclass
class ExportReport:
    """What ``export`` wrote and how closely the exported model reproduced PyTorch."""

    path: Path
    format: str
    input_size: int
    batch: Union[str, int]
    opset: Optional[int]
    checked_batches: tuple[int, ...]  # batch sizes run through the exported file
    max_abs_diff: Optional[float]  # None when the runtime was not available (ONNX without onnxruntime)


class _Logits(nn.Module):
    """The inference graph: the model without its aux heads, returning logits only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model = copy.deepcopy(unwrap_model(model)).eval()
        if getattr(model, "aux1", None) is not None:
            model.aux1 = model.aux2 = None  # training-only heads (paper section 5); not part of the deployed graph
            model.aux_logits = False
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)


def resolve_input_size(model: nn.Module, input_size: Optional[int]) -> int:
    if input_size is None:
        input_size = int((getattr(model, "preprocessing", None) or {}).get("input_size") or 224)
    if not MIN_INPUT_SIZE <= input_size <= MAX_INPUT_SIZE:
        raise UserError(f"--input-size must be in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}], got {input_size}")
    return input_size


def check_batch(batch: Union[str, int]) -> Union[str, int]:
    if batch != "dynamic" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise UserError(f"--batch must be 'dynamic' or a positive integer, got {batch!r}")
    return batch


def _metadata(model: nn.Module, input_size: int) -> dict[str, str]:
    meta = getattr(model, "metadata", None) or {}
    return {"googlenet.arch": str(meta.get("arch") or getattr(model, "arch_name", "")),
            "googlenet.class_names": json.dumps(getattr(model, "class_names", None)),
            "googlenet.preprocessing": json.dumps({**(getattr(model, "preprocessing", None) or {}),
                                                   "input_size": input_size})}


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise UserError(f"ONNX export needs the onnx package: {PIP_HINT}") from None
    return onnx


def _write_onnx(model: nn.Module, path: Path, input_size: int, batch: Union[str, int], opset: int,
                dynamo: bool) -> None:
    onnx = require_onnx()
    graph = _Logits(model)
    example = torch.randn(1 if batch == "dynamic" else batch, 3, input_size, input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer warnings
        if dynamo:
            dims = {"images": {0: torch.export.Dim("batch", min=1, max=65536)}} if batch == "dynamic" else None
            torch.onnx.export(graph, (example,), str(path), dynamo=True, external_data=False, opset_version=opset,
                              verbose=False, input_names=["images"], output_names=["logits"], dynamic_shapes=dims)
        else:
            axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if batch == "dynamic" else None
            torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=["logits"], dynamic_axes=axes)
    proto = onnx.load(str(path))
    for key, value in _metadata(model, input_size).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise UserError(f"exported ONNX model fails onnx.checker: {one_line(e, 300)}") from None


def _write_torchscript(model: nn.Module, path: Path, input_size: int) -> None:
    graph = _Logits(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices: TorchScript is what this format is
        scripted = torch.jit.script(graph.model)  # scripted, not traced: any input size and batch keep working
        torch.jit.save(scripted, str(path), _extra_files={"googlenet.json": json.dumps(_metadata(model, input_size))})


def export_onnx(model: nn.Module, path: str | os.PathLike, *, input_size: Optional[int] = None,
                batch: Union[str, int] = "dynamic", opset: Optional[int] = None, dynamo: bool = False,
                native_lrn: bool = True) -> Path:
    """Writes ``model`` (eval mode, no aux heads) as ONNX to ``path`` atomically and checks it with onnx.checker.

    input_size: the H = W the graph is traced at (default ``model.preprocessing["input_size"]`` or 224; the spatial
    size is fixed in the graph). batch: "dynamic" (any N) or a fixed N. opset: default 17 (18 with dynamo).
    native_lrn: LRN layers as ONNX's ``LRN`` op, or decomposed (faster on ONNX Runtime's CPU; see models/lrn.py).
    """
    input_size = resolve_input_size(model, input_size)
    batch = check_batch(batch)
    opset = check_opset(opset, dynamo)
    with atomic_path(path) as tmp, onnx_lrn(native_lrn):
        _write_onnx(model, tmp, input_size, batch, opset, dynamo)
    return Path(path)


def export_torchscript(model: nn.Module, path: str | os.PathLike, *, input_size: Optional[int] = None) -> Path:
    """Writes ``model`` (eval mode, no aux heads) as a scripted TorchScript module to ``path`` atomically.
    The module takes any batch and any input size >= 64; ``input_size`` is recorded in its metadata."""
    input_size = resolve_input_size(model, input_size)
    with atomic_path(path) as tmp:
        _write_torchscript(model, tmp, input_size)
    return Path(path)


def check_opset(opset: Optional[int], dynamo: bool) -> int:
    low = 18 if dynamo else MIN_OPSET
    if opset is None:
        return max(DEFAULT_OPSET, low)
    if not low <= opset <= MAX_OPSET:
        raise UserError(f"--opset must be in [{low}, {MAX_OPSET}], got {opset}")
    return opset


def onnx_runtime_diff(model: nn.Module, path: str | os.PathLike, batches: tuple[int, ...],
                      input_size: int) -> Optional[float]:
    """Runs random batches through the ONNX file with ONNX Runtime and through ``model``; returns the max abs
    difference of the logits over all batches, or None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same CPU share as PyTorch, not every core
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _max_diff(model, lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0]), batches, input_size)


def torchscript_diff(model: nn.Module, path: str | os.PathLike, batches: tuple[int, ...], input_size: int) -> float:
    """Reloads the TorchScript file and compares it with ``model`` on random batches: max abs difference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    return _max_diff(model, loaded, batches, input_size)


@torch.no_grad()
def _max_diff(model: nn.Module, run, batches: tuple[int, ...], input_size: int) -> float:
    generator = torch.Generator().manual_seed(0)
    reference = _Logits(model)
    worst = 0.0
    for n in batches:
        x = torch.randn(n, 3, input_size, input_size, generator=generator)
        got = run(x)
        if tuple(got.shape) != (n, reference.model.num_classes):
            raise UserError(f"exported model returned shape {tuple(got.shape)} for a batch of {n}")
        worst = max(worst, (got.float() - reference(x)).abs().max().item())
    return worst


def export(model: nn.Module, path: str | os.PathLike, *, format: str = "onnx", input_size: Optional[int] = None,
           batch: Union[str, int] = "dynamic", opset: Optional[int] = None, dynamo: bool = False,
           tolerance: Optional[float] = None) -> ExportReport:
    """Exports, runs the exported file on random batches (batch 1 and 3 through the same file for a dynamic
    batch) and compares with PyTorch. Beyond ``tolerance`` it raises UserError and ``path`` is not written."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    if format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    input_size = resolve_input_size(model, input_size)
    batch = check_batch(batch)
    batches = (1, 3) if batch == "dynamic" else (batch,)
    if format == "onnx":
        opset = check_opset(opset, dynamo)
        require_onnx()
    else:
        opset = None  # TorchScript is batch-agnostic either way: "dynamic" checks batches 1 and 3 too
    path = Path(path)
    with atomic_path(path) as tmp:  # the file appears only once it has passed the comparison
        if format == "onnx":
            _write_onnx(model, tmp, input_size, batch, opset, dynamo)
            diff = onnx_runtime_diff(model, tmp, batches, input_size)
        else:
            _write_torchscript(model, tmp, input_size)
            diff = torchscript_diff(model, tmp, batches, input_size)
        if diff is not None and not diff <= tolerance:  # "not <=" also catches NaN
            raise UserError(f"exported {format} model differs from PyTorch by {diff:.3g} (max abs, tolerance "
                            f"{tolerance:g}); {path} not written")
    return ExportReport(path, format, input_size, batch, opset, batches if diff is not None else (), diff)
