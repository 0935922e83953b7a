"""The world's trained paper-exact GoogLeNets, read from their own formats into the paper's network.

* ``caffe``  Caffe's binary ``NetParameter`` (``.caffemodel``), parsed with the ``protobuf`` package from a schema
             subset declared in code (no Caffe needed).
* ``bvlc``   BVLC's ``bvlc_googlenet.caffemodel``: its layer names mapped onto ``googlenet``, aux heads included;
             its preprocessing (BGR, 0..255, mean 104/117/123) recorded in the weights file.
"""


def cached_pretrained(*, url: str, original: str, converted: str, arch: str, source_flag: str, convert,
                      suggested_output: str, timeout: float = 20.0):
    """What ``--weights bvlc|inception5h`` resolve through: the converted file from torch.hub's cache
    (``$TORCH_HOME/hub/checkpoints``), else the original file from the cache, else ``url`` downloaded there (online);
    offline, one line naming the file to download and the convert command. ``convert(original, converted)``
    converts and caches; where the cache is read-only, the model converted in memory is returned."""
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
        help_line = (f"download {url} on a connected machine, then run 'googlenet convert --from {source_flag} "
                     f"{original} {suggested_output}' and pass --weights {suggested_output}")
        fetch_to(url, original_path, timeout, help_line)
    return convert(original_path, converted_path)
