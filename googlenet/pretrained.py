"""Named pretrained sources for ``--weights``: ``bvlc`` (BVLC Caffe's GoogLeNet) and ``inception5h`` (Google's).

Like ``--weights torchvision``: the converted file is looked for in torch.hub's cache
(``$TORCH_HOME/hub/checkpoints``), then the original file there; only when neither is present is the original
fetched from its public address, converted and cached. Offline, one line says what to download and how to convert
it by hand.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import UserError, one_line


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    arch: str
    convert_from: str  # the ``googlenet convert --from`` value
    sha1: Optional[str] = None  # published checksum of the original file, checked after download


SOURCES = {
    # models/bvlc_googlenet/readme.md of BVLC/caffe: the download address and the file's sha1.
    "bvlc": Source("bvlc", "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel", "googlenet", "caffe",
                   sha1="405fc5acd08a3bb12de8ee5e23a96bec22f08204"),
    # lucent's model zoo address for ProGamerGov's PyTorch port of the TensorFlow graph.
    "inception5h": Source("inception5h",
                          "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth",
                          "googlenet_inception5h", "inception5h"),
}
NETWORK_TIMEOUT_S = 20.0


def offline_help(source: Source, reason: str) -> str:
    file = Path(urlparse(source.url).path).name
    return (f"cannot fetch the {source.name} weights ({reason}): on a connected machine download {source.url}, then "
            f"run 'googlenet convert --from {source.convert_from} {file} {source.name}.safetensors' and pass "
            f"--weights {source.name}.safetensors")


def _convert(source: Source, original: Path, converted: Path) -> None:
    if source.convert_from == "caffe":
        from .caffe import convert_caffe

        convert_caffe(original, converted)
    else:
        from .inception5h import convert_inception5h

        convert_inception5h(original, converted)


def _download(source: Source, dst: Path, timeout: float) -> None:
    import hashlib

    from .convert import _reachable
    from .fileio import atomic_path, open_weights_file

    parts = urlparse(source.url)
    problem = _reachable(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), timeout)
    if problem is not None:
        raise UserError(offline_help(source, problem))
    print(f"downloading {source.url} to {dst}", file=sys.stderr)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # a stalled read fails instead of hanging
    try:
        with atomic_path(dst) as tmp:  # no half-downloaded file is ever left under the final name
            torch.hub.download_url_to_file(source.url, str(tmp), progress=sys.stderr.isatty())
            if source.sha1 is not None:
                h = hashlib.sha1()
                with open_weights_file(tmp, "download") as (f, _):
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest() != source.sha1:
                    raise UserError(f"{source.url} has sha1 {h.hexdigest()}, expected {source.sha1}; not kept")
    except UserError:
        raise
    except Exception as e:
        raise UserError(offline_help(source, one_line(e))) from None
    finally:
        socket.setdefaulttimeout(previous)


def load_pretrained(name: str, *, timeout: float = NETWORK_TIMEOUT_S) -> nn.Module:
    """The model of a named source, in eval mode, with its metadata (preprocessing, class names)."""
    from .weights import load_model

    source = SOURCES[name]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    original = cache / Path(urlparse(source.url).path).name
    converted = cache / f"{source.arch}-{source.name}.safetensors"
    if converted.is_file():
        try:
            return load_model(converted, arch=source.arch)
        except UserError:
            pass  # a damaged cache entry: convert again below
    if not original.is_file():
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create torch hub cache {cache}: {e.strerror or e}") from None
        _download(source, original, timeout)
    _convert(source, original, converted)
    return load_model(converted, arch=source.arch)


__all__ = ["SOURCES", "load_pretrained", "offline_help"]
