"""``--weights inception5h``: Google's GoogLeNet, as ``--weights bvlc`` does BVLC's (see ``bvlc.py``).

The converted file from torch.hub's cache, else the PyTorch port's ``inception5h.pth`` from the cache, else that file
downloaded from lucent's model-zoo address (online), else one line saying what to download and how to convert it.
"""

from __future__ import annotations

from torch import nn

# lucent's model zoo address for ProGamerGov's PyTorch port of tensorflow_inception_graph.pb.
URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"


def load_inception5h_pretrained(*, timeout: float = 20.0) -> nn.Module:
    from ..inception5h import ARCH, convert_inception5h
    from . import cached_pretrained, convert_help

    return cached_pretrained(url=URL, original="inception5h.pth", converted="googlenet_inception5h.safetensors",
                             arch=ARCH, convert=convert_inception5h, timeout=timeout,
                             help_line=convert_help(URL, "inception5h", "inception5h.pth", "inception5h.safetensors"))
