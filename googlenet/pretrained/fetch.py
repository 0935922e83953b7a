"""Fetching the named sources' original files into torch.hub's cache, with a bounded wait and one clear line
offline, and the cache of their converted weights files."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sys
import threading
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch

from ..errors import UserError, one_line
from ..fileio import open_weights_file
from ..weights import attach_metadata, load_model, read_metadata, save_model

NETWORK_TIMEOUT_S = 20.0  # bound on connecting and on each read while fetching


def save_converted(model, src: Path, dst, source: dict, **save_kw):
    """Writes a converted ``model`` to ``dst`` (atomically), its ``source`` naming and hashing ``src``, and returns
    it with the metadata read back from ``dst``."""
    h = hashlib.sha256()
    with open_weights_file(src, "checkpoint") as (f, _):
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    save_model(model, dst, source={**source, "file": src.name, "sha256": h.hexdigest()}, **save_kw)
    attach_metadata(model, read_metadata(dst))
    return model


def reachable(host: str, port: int, timeout: float) -> Optional[str]:
    """None when ``host`` accepts a connection within ``timeout`` seconds, else why not. Runs in a daemon thread
    because name resolution ignores socket timeouts and can stall for minutes on a broken network."""
    result: list[Optional[str]] = ["no answer within %.0f s" % timeout]

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = None
        except OSError as e:
            result[0] = one_line(e)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0]


def fetch_to(url: str, dst: Path, timeout: float, help_line: str, hash_prefix: Optional[str] = None,
             what: Optional[str] = None) -> None:
    """Downloads ``url`` to ``dst`` through a temp file (torch.hub's downloader), with a bounded wait; offline or
    failing, one UserError line: why, and ``help_line`` (what to download and how to convert it)."""
    def offline(reason: str) -> UserError:
        return UserError(f"cannot fetch {what or url} ({reason}): {help_line}")

    parts = urlparse(url)
    problem = reachable(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), timeout)
    if problem is not None:
        raise offline(problem)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create cache folder {dst.parent}: {e.strerror or e}") from None
    print(f"downloading {url} to {dst}", file=sys.stderr)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # a stalled read fails instead of hanging
    try:
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=hash_prefix, progress=sys.stderr.isatty())
    except Exception as e:
        raise offline(one_line(e)) from None
    finally:
        socket.setdefaulttimeout(previous)


def convert_help(url: str, source_flag: str, original: str, output: str) -> str:
    """The offline line's advice: what to download and how to convert it."""
    return (f"download {url} on a connected machine, then run 'googlenet convert --from {source_flag} {original} "
            f"{output}' and pass --weights {output}")


def cached_pretrained(*, url: str, original: str, converted: str, arch: str, convert, help_line: str,
                      hash_prefix: Optional[str] = None, timeout: float = NETWORK_TIMEOUT_S,
                      what: Optional[str] = None):
    """What ``--weights torchvision|bvlc|inception5h`` resolve through: the converted file from torch.hub's cache
    (``$TORCH_HOME/hub/checkpoints``), else the original file from the cache, else ``url`` downloaded there (online;
    ``hash_prefix`` checked when given); offline, one line with ``help_line``.
    ``convert(original, converted)`` converts and caches; where the cache is read-only it returns the model
    converted in memory."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    original_path, converted_path = cache / original, cache / converted
    if converted_path.is_file():
        with contextlib.suppress(UserError):  # a damaged cache entry: convert again below
            return load_model(converted_path, arch=arch)
    if not original_path.is_file():
        fetch_to(url, original_path, timeout, help_line, hash_prefix=hash_prefix, what=what)
    return convert(original_path, converted_path)
