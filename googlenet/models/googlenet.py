"""GoogLeNet (Inception v1), Szegedy et al., "Going deeper with convolutions", arXiv 1409.4842.

One network class serves four architectures, each a table of choices (``ARCHS`` at the bottom):

* ``googlenet``     the paper's Figure 3 and Table 1: conv biases, LocalResponseNorm in the stem, a true 5x5 branch,
                    auxiliary heads with the paper's 5x5/3 average pool, Caffe's initialisation.
* ``googlenet_bn``  the same topology with BatchNorm after every convolution (no LRN, no conv bias): trains easily.
* ``googlenet_tv``  torchvision's ``GoogLeNet``: same module names (so its state dict loads as is), its 3x3 "5x5"
                    branch, its 2x2 pool before 5a, its adaptive aux pool, dropout 0.2 and ``transform_input``.
* ``googlenet_inception5h``  Google's TensorFlow GoogLeNet (``tensorflow_inception_graph.pb`` of DeepDream; Lucid's
                    and the Distill Circuits' "InceptionV1"): the paper's network with 204 filters in 4a's 3x3
                    branch, TensorFlow SAME padding, TF's LRN parameters and 1008 classes.

Shape comments are for a 224x224 input, where the paper's geometry (112-56-28-14-7) holds exactly.
"""

# No "from __future__ import annotations": TorchScript needs real types in the NamedTuple.
import math
from dataclasses import dataclass, replace
from functools import partial
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lrn import local_response_norm


class GoogLeNetOutputs(NamedTuple):
    """What ``model(x, with_aux=True)`` returns. aux1 is the head on 4a, aux2 the head on 4d (None when off)."""

    logits: Tensor
    aux1: Optional[Tensor]
    aux2: Optional[Tensor]


@dataclass(frozen=True)
class ArchConfig:
    """Every way the architectures differ. Defaults are the paper's network."""

    norm: str = "lrn"  # "lrn": LRN in the stem (paper); "bn": BatchNorm after every conv, no conv bias
    branch3_kernel: int = 5  # the "5x5" branch; torchvision uses 3 (pytorch/vision#906)
    pool4_kernel: int = 3  # the max pool before 5a: paper 3x3/2; torchvision 2x2/2 (same 7x7 output at 224)
    aux_pool: str = "paper"  # "paper": avg pool 5x5/3; "adaptive": adaptive avg pool to 4x4 (torchvision)
    dropout: float = 0.4  # before the main classifier; torchvision 0.2
    aux_dropout: float = 0.7
    transform_input: bool = False  # torchvision's ImageNet-normalised -> [-1, 1] remapping
    init: str = "caffe"  # "caffe": xavier + bias 0.2 (bvlc_googlenet train_val); "torchvision": trunc normal 0.01
    bn_eps: float = 1e-3  # torchvision's BasicConv2d uses 0.001
    # "caffe": symmetric conv padding, stride-2 max pools rounding up (ceil); "same": TensorFlow SAME padding on the
    # stride-2 layers (conv1 and the max pools), asymmetric: conv1 pads 2 before and 3 after at 224.
    padding: str = "caffe"
    lrn: tuple = (5, 1e-4, 0.75, 1.0)  # LocalResponseNorm (size, alpha, beta, k); Caffe's
    # Table 1's rows for 4a and 5a (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj); inception5h departs in both:
    # 4a's 3x3 has 204 filters (4a outputs 508), 5a's 5x5 reduce has 48.
    inception4a: tuple = (192, 96, 208, 16, 48, 64)
    inception5a: tuple = (256, 160, 320, 32, 128, 128)


class LocalResponseNorm(nn.LocalResponseNorm):
    """Caffe's LRN with the fast, exact kernel of ``lrn.py`` (a GEMM window sum and a written-out backward; fp32
    inside for bf16/fp16 input; the native ONNX ``LRN`` op on export). TorchScript, which cannot call a custom
    autograd function, runs PyTorch's own ``F.local_response_norm`` with the same result."""

    native = True  # local_response_norm's: False keeps the C kernel out (a benchmark's PyTorch contender)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return F.local_response_norm(x.float(), self.size, self.alpha, self.beta, self.k).to(x.dtype)
        return self._fast(x)

    @torch.jit.unused
    def _fast(self, x: Tensor) -> Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, native=self.native)


class SamePad(nn.Module):
    """TensorFlow's SAME padding for a ``kernel``/``stride`` window: output ceil(n / stride), the padding split with
    the extra pixel after (so asymmetric on stride-2 layers). Computed from the input size, as TF does; ``value``
    -inf for max pools. Parameter-free, so state dict keys do not change."""

    def __init__(self, kernel: int, stride: int, value: float = 0.0) -> None:
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []
        for n in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((-(-n // self.stride) - 1) * self.stride + self.kernel - n, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads, value=self.value)


def max_pool(kernel: int, stride: int, padding: str) -> nn.Module:
    """A stride-2 max pool: Caffe's (ceil rounding, no padding) or TensorFlow's SAME (pad -inf, floor rounding)."""
    if padding == "same":
        return nn.Sequential(SamePad(kernel, stride, float("-inf")), nn.MaxPool2d(kernel, stride=stride))
    return nn.MaxPool2d(kernel, stride=stride, ceil_mode=True)


class BasicConv2d(nn.Module):
    """conv -> (BatchNorm) -> ReLU. The paper follows every convolution, reduce and projection included, by ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 *, batch_norm: bool, bn_eps: float = 1e-3, same: bool = False) -> None:
        super().__init__()
        self.pad = SamePad(kernel_size, stride) if same else nn.Identity()
        # With BatchNorm the conv bias is redundant (BN's shift replaces it), as in torchvision.
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=0 if same else padding,
                              bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(self.pad(x))), inplace=True)


class Inception(nn.Module):
    """Figure 2(b): four branches concatenated along channels, in the order 1x1, 3x3, 5x5, pool projection."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, *, cfg: ArchConfig) -> None:
        super().__init__()
        bn = dict(batch_norm=cfg.norm == "bn", bn_eps=cfg.bn_eps)
        k5 = cfg.branch3_kernel
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1, **bn)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, 1, **bn),
                                     BasicConv2d(ch3x3red, ch3x3, 3, padding=1, **bn))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, 1, **bn),
                                     BasicConv2d(ch5x5red, ch5x5, k5, padding=k5 // 2, **bn))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, 1, **bn))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier (paper section 5): avg pool 5x5/3 -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> linear.

    The paper's pool turns the 14x14 map of 4a/4d into 4x4. At other input sizes the map differs, so the head adapts:
    it keeps the paper's pool wherever that gives 4x4 and otherwise pools adaptively to 4x4, so FC 1024 always sees
    4*4*128 = 2048 features. torchvision always pools adaptively ("adaptive").
    """

    def __init__(self, in_channels: int, num_classes: int, *, cfg: ArchConfig) -> None:
        super().__init__()
        self.paper_pool = cfg.aux_pool == "paper"
        self.conv = BasicConv2d(in_channels, 128, 1, batch_norm=cfg.norm == "bn", bn_eps=cfg.bn_eps)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=cfg.aux_dropout)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if self.paper_pool and (h - 5) // 3 + 1 == 4 and (w - 5) // 3 + 1 == 4:
            x = F.avg_pool2d(x, 5, stride=3)  # N x 512 x 4 x 4 (4a), N x 528 x 4 x 4 (4d)
        else:
            x = F.adaptive_avg_pool2d(x, (4, 4))
        x = torch.flatten(self.conv(x), 1)  # N x 128 x 4 x 4 -> N x 2048
        x = self.dropout(F.relu(self.fc1(x), inplace=True))  # N x 1024
        return self.fc2(x)  # N x num_classes


def tv_transform_input(x: Tensor) -> Tensor:
    """torchvision's ``transform_input``: its weights were ported from TF-slim, which expects [-1, 1] input: channel
    c of an ImageNet-normalised input becomes x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5. (A function, not only a
    method, so a detection backbone built from the trunk's modules applies the same remap.)"""
    x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    return torch.cat((x_ch0, x_ch1, x_ch2), 1)


class GoogLeNet(nn.Module):
    """The network of Table 1. ``model(x)`` returns logits; ``model(x, with_aux=True)`` a ``GoogLeNetOutputs``."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, cfg: ArchConfig = ArchConfig()) -> None:
        super().__init__()
        self.cfg, self.num_classes, self.aux_logits = cfg, num_classes, aux_logits
        self.transform_input = cfg.transform_input
        bn = dict(batch_norm=cfg.norm == "bn", bn_eps=cfg.bn_eps)

        def lrn() -> nn.Module:
            # Caffe's LRN: size 5, alpha 1e-4, beta 0.75, k 1, across channels; PyTorch divides alpha by size the
            # same way Caffe does. TensorFlow's (inception5h): depth_radius 5, bias 2, alpha 1e-4, beta 0.5, i.e.
            # size 11 and alpha 11e-4 in these terms (TF does not divide alpha by the window).
            size, alpha, beta, k = cfg.lrn
            return LocalResponseNorm(size, alpha=alpha, beta=beta, k=k) if cfg.norm == "lrn" else nn.Identity()

        inception = partial(Inception, cfg=cfg)

        # Table 1, row by row. Stride-2 max pools round up (Caffe's ceil rounding) to give 112-56-28-14-7.
        same = cfg.padding == "same"
        self.conv1 = BasicConv2d(3, 64, 7, stride=2, padding=3, same=same, **bn)  # conv1 7x7/2: 112x112x64
        self.maxpool1 = max_pool(3, 2, cfg.padding)  # max pool 3x3/2: 56x56x64
        self.lrn1 = lrn()  # Figure 3: LocalRespNorm after the first pool
        self.conv2 = BasicConv2d(64, 64, 1, **bn)  # conv2, "3x3 reduce" 64: 56x56x64
        self.conv3 = BasicConv2d(64, 192, 3, padding=1, **bn)  # conv2 3x3/1: 56x56x192
        self.lrn2 = lrn()  # Figure 3: LocalRespNorm before the second pool
        self.maxpool2 = max_pool(3, 2, cfg.padding)  # max pool 3x3/2: 28x28x192

        #                               in  #1x1 #3x3r #3x3 #5x5r #5x5 pool
        self.inception3a = inception(192, 64, 96, 128, 16, 32, 32)  # 28x28x256
        self.inception3b = inception(256, 128, 128, 192, 32, 96, 64)  # 28x28x480
        self.maxpool3 = max_pool(3, 2, cfg.padding)  # 14x14x480

        self.inception4a = inception(480, *cfg.inception4a)  # 14x14x512 (inception5h: 508)
        out4a = sum(cfg.inception4a) - cfg.inception4a[1] - cfg.inception4a[3]  # 1x1 + 3x3 + 5x5 + pool proj
        self.inception4b = inception(out4a, 160, 112, 224, 24, 64, 64)  # 14x14x512
        self.inception4c = inception(512, 128, 128, 256, 24, 64, 64)  # 14x14x512
        self.inception4d = inception(512, 112, 144, 288, 32, 64, 64)  # 14x14x528
        self.inception4e = inception(528, 256, 160, 320, 32, 128, 128)  # 14x14x832
        # Paper: 3x3/2. torchvision: 2x2/2 (a TF-slim port); both give 7x7 at 224.
        self.maxpool4 = max_pool(cfg.pool4_kernel, 2, cfg.padding)  # 7x7x832

        self.inception5a = inception(832, *cfg.inception5a)  # 7x7x832
        self.inception5b = inception(832, 384, 192, 384, 48, 128, 128)  # 7x7x1024

        # Auxiliary heads on the outputs of 4a and 4d; used for the training loss only.
        self.aux1: Optional[InceptionAux] = InceptionAux(out4a, num_classes, cfg=cfg) if aux_logits else None
        self.aux2: Optional[InceptionAux] = InceptionAux(528, num_classes, cfg=cfg) if aux_logits else None

        # avg pool 7x7/1 at 224; adaptive so that any input size from 64 up works.
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))  # 1x1x1024
        self.dropout = nn.Dropout(p=cfg.dropout)  # dropout 40% (torchvision: 20%)
        self.fc = nn.Linear(1024, num_classes)  # linear: 1x1x1000, softmax is applied by the loss / at test time

        init_weights(self, cfg.init)

    def forward_features(self, x: Tensor, with_aux: bool = False) -> GoogLeNetOutputs:
        """Runs the trunk; returns the pooled 1024-d features and, when asked, the aux logits."""
        if self.transform_input:
            x = tv_transform_input(x)
        x = self.maxpool1(self.conv1(x))  # N x 64 x 56 x 56
        x = self.lrn1(x)
        x = self.conv3(self.conv2(x))  # N x 192 x 56 x 56
        x = self.maxpool2(self.lrn2(x))  # N x 192 x 28 x 28
        x = self.inception3b(self.inception3a(x))  # N x 480 x 28 x 28
        x = self.maxpool3(x)  # N x 480 x 14 x 14
        x = self.inception4a(x)  # N x 512 x 14 x 14
        aux1 = self.aux1(x) if with_aux and self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # N x 528 x 14 x 14
        aux2 = self.aux2(x) if with_aux and self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))  # N x 832 x 7 x 7
        x = self.inception5b(self.inception5a(x))  # N x 1024 x 7 x 7
        x = torch.flatten(self.avgpool(x), 1)  # N x 1024
        return GoogLeNetOutputs(x, aux1, aux2)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(features))  # N x num_classes

    def forward(self, x: Tensor, with_aux: bool = False) -> Union[Tensor, GoogLeNetOutputs]:
        # One return type per call site, the same in train and eval mode (unlike torchvision, whose return type
        # follows self.training): logits, or (logits, aux1, aux2) when with_aux is asked for.
        feats = self.forward_features(x, with_aux)
        logits = self.forward_head(feats.logits)
        if with_aux:
            return GoogLeNetOutputs(logits, feats.aux1, feats.aux2)
        return logits

    def reset_classifier(self, num_classes: int) -> None:
        """New classifiers (main and aux) for ``num_classes`` classes, initialised as the arch initialises them."""
        self.num_classes = num_classes
        self.fc = nn.Linear(1024, num_classes)
        heads = [self.fc]
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = nn.Linear(1024, num_classes)
                heads.append(aux.fc2)
        for head in heads:
            _init_layer(head, self.cfg.init, bias=0.0)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, aux_logits={self.aux_logits}, cfg={self.cfg}"


def _init_layer(m: nn.Conv2d | nn.Linear, scheme: str, bias: float) -> None:
    """A conv's or linear layer's weights and bias (``bias`` under Caffe's scheme, 0 under torchvision's)."""
    if scheme == "caffe":
        # Caffe's "xavier" filler: uniform in +-sqrt(3 / fan_in), fan_in = in_channels * kh * kw (not Glorot's average).
        bound = math.sqrt(3.0 / m.weight[0].numel())
        nn.init.uniform_(m.weight, -bound, bound)
    else:
        nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
    if m.bias is not None:
        nn.init.constant_(m.bias, bias if scheme == "caffe" else 0.0)


@torch.no_grad()
def init_weights(model: GoogLeNet, scheme: str) -> None:
    """Caffe (bvlc_googlenet/train_val.prototxt): xavier weights, bias 0.2 on every conv and on the aux FC 1024,
    bias 0 on the three classifiers. "torchvision": truncated normal std 0.01, zero biases, as torchvision does."""
    if scheme not in ("caffe", "torchvision"):
        raise ValueError(f"unknown init scheme {scheme!r}")
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            _init_layer(m, scheme, bias=0.2)
        elif isinstance(m, nn.Linear):
            _init_layer(m, scheme, bias=0.0 if name == "fc" or name.endswith(".fc2") else 0.2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


ARCHS: dict[str, ArchConfig] = {
    "googlenet": ArchConfig(),
    "googlenet_bn": ArchConfig(norm="bn", init="caffe"),
    "googlenet_tv": ArchConfig(norm="bn", branch3_kernel=3, pool4_kernel=2, aux_pool="adaptive", dropout=0.2,
                               init="torchvision"),
    # The TensorFlow graph's own choices (inception5h); see docs/weights.md. Its aux heads are the paper's.
    "googlenet_inception5h": ArchConfig(padding="same", lrn=(11, 11e-4, 0.5, 2.0),
                                        inception4a=(192, 96, 204, 16, 48, 64),
                                        inception5a=(256, 160, 320, 48, 128, 128)),
}

# Options a caller may set per arch (create_model's **options), with the ArchConfig field each maps to.
OPTION_FIELDS = ("dropout", "aux_dropout", "transform_input", "init")


def build(arch: str, *, num_classes: int = 1000, aux_logits: bool = True, **options) -> GoogLeNet:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(sorted(ARCHS))}")
    if unknown := set(options) - set(OPTION_FIELDS):
        raise ValueError(f"unknown option(s) for {arch}: {', '.join(sorted(unknown))}; "
                         f"accepted: {', '.join(OPTION_FIELDS)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(options.get("transform_input", False), bool):  # a weights file's "yes" would read as true
        raise ValueError(f"transform_input must be true or false, got {options['transform_input']!r}")
    for key in ("dropout", "aux_dropout"):
        if key in options and not 0.0 <= float(options[key]) < 1.0:
            raise ValueError(f"{key} must be in [0, 1), got {options[key]!r}")
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, cfg=replace(ARCHS[arch], **options))


def arch_options(model: GoogLeNet) -> dict:
    """The options that rebuild ``model`` with ``build`` (stored in weights files)."""
    return {k: getattr(model.cfg, k) for k in OPTION_FIELDS}
