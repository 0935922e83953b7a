"""``--weights inception5h``: Google's GoogLeNet, as ``--weights bvlc`` does BVLC's (see ``bvlc.py``).

The converted file from torch.hub's cache, else the PyTorch port's ``inception5h.pth`` from the cache, else that file
downloaded from lucent's model-zoo address (online), else one line saying what to download and how to convert it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

# lucent's model zoo address for ProGamerGov's PyTorch port of tensorflow_inception_graph.pb.
URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"


def load_inception5h_pretrained(*, timeout: float = 20.0) -> nn.Module:
    from ..convert import fetch_to
    from ..inception5h import ARCH, convert_inception5h
    from ..weights import load_model

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoint = cache / "inception5h.pth"
    converted = cache / "googlenet_inception5h.safetensors"
    if converted.is_file():
        try:
            return load_model(converted, arch=ARCH)
        except UserError:
            pass  # damaged: convert again
    if not checkpoint.is_file():
        help_line = (f"download {URL} on a connected machine, then run 'googlenet convert --from inception5h "
                     f"inception5h.pth inception5h.safetensors' and pass --weights inception5h.safetensors")
        fetch_to(URL, checkpoint, timeout, help_line)
    return convert_inception5h(checkpoint, converted)
