"""The world's trained paper-exact GoogLeNets, read from their own formats into the paper's network.

* ``caffe``  Caffe's binary ``NetParameter`` (``.caffemodel``), parsed with the ``protobuf`` package from a schema
             subset declared in code (no Caffe needed).
* ``bvlc``   BVLC's ``bvlc_googlenet.caffemodel``: its layer names mapped onto ``googlenet``, aux heads included;
             its preprocessing (BGR, 0..255, mean 104/117/123) recorded in the weights file.
"""

from __future__ import annotations

from typing import Optional



def convert_help(url: str, source_flag: str, original: str, output: str) -> str:
    """The offline line's advice: what to download and how to convert it."""
    return (f"download {url} on a connected machine, then run 'googlenet convert --from {source_flag} {original} "
            f"{output}' and pass --weights {output}")


def cached_pretrained(*, url: str, original: str, converted: str, arch: str, convert, help_line: Optional[str],
                      hash_prefix: Optional[str] = None, timeout: float = 20.0):
    """What ``--weights torchvision|bvlc|inception5h`` resolve through: the converted file from torch.hub's cache
    (``$TORCH_HOME/hub/checkpoints``), else the original file from the cache, else ``url`` downloaded there (online;
    ``hash_prefix`` checked when given); offline, one line with ``help_line`` (None: torchvision's own advice).
    ``convert(original, converted)`` converts and caches; where the cache is read-only it returns the model
    converted in memory."""
    from pathlib import Path

    import torch

    from ..convert import fetch_to
    from ..errors import UserError
    from ..weights import load_model

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    original_path, converted_path = cache / original, cache / converted
    if converted_path.is_file():
        try:
            return load_model(converted_path, arch=arch)
        except UserError:
            pass  # a damaged cache entry: convert again below
    if not original_path.is_file():
        fetch_to(url, original_path, timeout, help_line, hash_prefix=hash_prefix)
    return convert(original_path, converted_path)
