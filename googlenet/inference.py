"""The fast inference path for a loaded model: ``optimize_for_inference(model, precision=..., backend=...)``.

Returns a callable ``predictor(images) -> fp32 logits`` (images: N x 3 x H x W float, already normalised as
``model.preprocessing`` says) that predict, eval and the benchmark all use. What it does, in order:

1. BatchNorm folding (``fold_batchnorm``): every conv -> BN pair of googlenet_bn / googlenet_tv becomes one conv
   with rescaled weights and a bias, exact up to float rounding (~1e-6). The paper's googlenet has no BN.
2. The backend and precision:

   ============  =====================================  ==========================================================
   backend       fp32                                   lower precision
   ============  =====================================  ==========================================================
   eager         channels_last oneDNN convs             bf16: weights and activations in bfloat16 (AVX512-BF16/AMX)
   compile       torch.compile (Inductor, freezing)     bf16: as eager, compiled
   onnxruntime   ONNX Runtime, its graph optimisations  int8: static QDQ quantisation (VNNI), per-channel weights,
                                                        activations calibrated on ``calibration`` or the first batch
   ============  =====================================  ==========================================================

int8 is ONNX Runtime's only (PyTorch's own int8 CPU path needs PT2E + Inductor and compiles for minutes on a small
CPU); bf16 is PyTorch's only (ONNX Runtime's CPU kernels have no bf16 convolutions). The predictor always returns
fp32 logits. See docs/inference.md for measured speeds and agreement with fp32.
"""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import UserError
from .models import unwrap_model

PRECISIONS = ("fp32", "bf16", "int8")
BACKENDS = ("eager", "compile", "onnxruntime")
# (backend, precision) pairs that run; every other pair is refused with the reason below.
SUPPORTED = {("eager", "fp32"), ("eager", "bf16"), ("compile", "fp32"), ("compile", "bf16"),
             ("onnxruntime", "fp32"), ("onnxruntime", "int8")}
_WHY_NOT = {"int8": "int8 runs on ONNX Runtime's quantised kernels: use --backend onnxruntime",
            "bf16": "ONNX Runtime has no bf16 convolutions on the CPU: use --backend eager or compile for bf16"}


def fastest_backend(precision: str) -> str:
    """The backend that runs ``precision`` fastest on a CPU (measured in BENCHMARKS.md)."""
    return "onnxruntime" if precision in ("fp32", "int8") else "eager"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) where every ``conv`` followed by ``bn`` in one block is a single conv.

    Works on the project's BasicConv2d and torchvision's (both hold ``.conv`` and ``.bn``); models without BN are
    returned as an unchanged copy. y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta folds into the conv's
    weights (scaled per output channel) and bias.
    """
    model = copy.deepcopy(unwrap_model(model)).eval()
    for block in model.modules():
        conv, bn = getattr(block, "conv", None), getattr(block, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            block.conv = fuse_conv_bn_eval(conv, bn)
            block.bn = nn.Identity()
    return model


def optimize_for_inference(model: nn.Module, *, precision: str = "fp32", backend: str = "eager",
                           channels_last: bool = True, calibration: Optional[Tensor] = None,
                           fold_bn: bool = True) -> Callable[[Tensor], Tensor]:
    """The fastest predictor for ``model`` under ``precision`` / ``backend``: ``predictor(images) -> fp32 logits``.

    calibration: int8 only, normalised images (N x 3 x H x W) whose activation ranges set the quantisation scales;
    when None, the first batch given to the predictor calibrates it (use a few hundred representative images for
    the best accuracy). The model is not modified: the predictor holds its own folded copy.
    """
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if (backend, precision) not in SUPPORTED:
        raise UserError(_WHY_NOT[precision])
    net = fold_batchnorm(model) if fold_bn else copy.deepcopy(unwrap_model(model)).eval()
    predictor = (_OrtPredictor(net, precision, calibration) if backend == "onnxruntime"
                 else _TorchPredictor(net, precision, channels_last, compile=backend == "compile"))
    predictor.precision, predictor.backend = precision, backend
    return predictor


class _TorchPredictor:
    """Eager or compiled PyTorch, fp32 or bf16, NCHW or channels_last."""

    def __init__(self, model: nn.Module, precision: str, channels_last: bool, compile: bool) -> None:
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # bf16 weights rather than autocast: no per-call weight casts, and pools / concats move half the bytes.
        self.model = model.to(dtype=self.dtype, memory_format=self.memory_format)
        self.compiled = torch.compile(self.model) if compile else None

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> Tensor:
        images = images.to(dtype=self.dtype).contiguous(memory_format=self.memory_format)
        if self.compiled is None:
            return self.model(images).float()
        import torch._inductor.config as inductor_config

        # Freezing turns weights into constants, so Inductor pre-packs them for oneDNN: the main CPU gain.
        with inductor_config.patch(freezing=True):
            return self.compiled(images).float()


class _OrtPredictor:
    """ONNX Runtime on the exported (folded) model; int8 quantises it statically. One session per input size."""

    def __init__(self, model: nn.Module, precision: str, calibration: Optional[Tensor]) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError('--backend onnxruntime needs onnxruntime: pip install "googlenet[export]"') from None
        self.model, self.precision, self.calibration = model, precision, calibration
        self.sessions: dict[tuple[int, int], object] = {}

    def __call__(self, images: Tensor) -> Tensor:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if size not in self.sessions:
            if size[0] != size[1]:
                raise UserError(f"--backend onnxruntime needs square inputs, got {size[0]}x{size[1]}")
            calibration = self.calibration if self.calibration is not None else images
            self.sessions[size] = build_ort_session(self.model, size[0], self.precision, calibration)
        session = self.sessions[size]
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x})[0])


def ort_session_options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores PyTorch was given
    return options


def build_ort_session(model: nn.Module, input_size: int, precision: str = "fp32", calibration: Optional[Tensor] = None):
    """An ONNX Runtime CPU session for ``model`` at ``input_size`` (dynamic batch); int8 quantises statically."""
    import onnxruntime as ort

    from .export import export_onnx

    with tempfile.TemporaryDirectory(prefix="googlenet-ort-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        # LRN decomposed: ONNX Runtime's CPU LRN kernel is slower than the elementwise ops (models/lrn.py).
        export_onnx(model, path, input_size=input_size, batch="dynamic", native_lrn=False)
        if precision == "int8":
            path = quantize_int8(path, calibration, os.path.join(tmp, "model.int8.onnx"))
        # Read into memory so the temp folder can go; the session keeps no file handle.
        with open(path, "rb") as f:
            data = f.read()
    return ort.InferenceSession(data, ort_session_options(), providers=["CPUExecutionProvider"])


def quantize_int8(path: str, calibration: Tensor, out: str) -> str:
    """Static QDQ quantisation: per-channel int8 weights, uint8 activations with MinMax ranges from ``calibration``.

    QDQ (not QOperator) lets ONNX Runtime fuse Q/DQ pairs into its VNNI int8 conv kernels; per-channel weights keep
    top-1 agreement with fp32 (>= 99%, measured in BENCHMARKS.md).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [calibration[i:i + 16].detach().float().contiguous().numpy() for i in range(0, len(calibration), 16)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": b} for b in batches])  # each reader its own pass over the batches

        def get_next(self):
            return next(self.items, None)

    pre = out + ".pre.onnx"
    quant_pre_process(path, pre)  # shape inference + graph cleanup, as ORT recommends before quantising
    # Every op type quantize_static would take (its own default list) except AveragePool: the only AveragePool in
    # these nets is the decomposed LRN's window over channels (global pools are another op type), and ONNX Runtime's
    # QLinearAveragePool of that 3-D window took 209 of the int8 paper net's 525 ms a batch of 32 at 224: int8 was
    # 1.26x its fp32 instead of 1.6-1.8x. Left unquantised, the LRN's window and power run in fp32.
    op_types = sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - {"AveragePool"})
    quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=op_types,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out
