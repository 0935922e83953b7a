"""Shard sets that live elsewhere: ``http(s)://HOST/PATH`` (the folder that holds index.json) or a ``pipe:`` command
template with ``{}`` where a file's name goes (``pipe:aws s3 cp s3://bucket/shards/{} -``), as WebDataset allows.

Training streams remote shards through WebDataset itself (``webdataset.gopen``: curl for http(s), a shell for
``pipe:``), so nothing is copied. Held-out evaluation needs random access (each rank scores images r, r + world,
...), so a split's shards are first staged, once per machine, into a cache folder, each checked against the size
and SHA-256 that the index gives for it. Only the index and the shards are read this way, and only as far as the
index says they go: a server cannot make us read more than it declared.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

from ..errors import UserError
from ..fileio import atomic_path, printable

SCHEMES = ("http://", "https://", "pipe:")
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")  # what the writer makes
CHUNK = 1 << 20


def is_remote(data: object) -> bool:
    return isinstance(data, str) and data.startswith(SCHEMES)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:300] if text else type(e).__name__


def locate(data: str, name: str) -> str:
    """The URL (or pipe: command) of file ``name`` of the remote shard set ``data``."""
    if not FILE_NAME.fullmatch(name) or ".." in name.split("/"):
        raise UserError(f"{printable(data)}: the index names a shard file {printable(name)!r} that is not a plain "
                        "relative name")
    if data.startswith("pipe:"):
        if "{}" not in data:
            raise UserError(f"a pipe: shard set names its files with {{}}, e.g. 'pipe:cat /data/shards/{{}}' "
                            f"(got {printable(data)})")
        return data.replace("{}", shlex.quote(name))
    return f"{data.rstrip('/')}/{name}"


def root_of(data: str) -> str:
    """``data`` without a trailing ``/index.json``: what the index's file names are relative to."""
    if data.startswith("pipe:"):
        return data
    return data[: -len("/index.json")] if data.endswith("/index.json") else data.rstrip("/")


def read_remote(url: str, *, limit: int) -> bytes:
    """The bytes at ``url``, refused past ``limit`` bytes or when the transfer fails (one line, a UserError)."""
    sink = io.BytesIO()
    fetch(url, sink, limit=limit)
    return sink.getvalue()


def fetch(url: str, sink: BinaryIO, *, limit: int) -> tuple[int, str]:
    """Copies ``url`` (http(s) through curl, pipe: through the shell, as webdataset.gopen opens them) into ``sink``,
    a chunk at a time; returns (bytes, SHA-256). Past ``limit`` bytes the transfer is stopped and refused."""
    from webdataset.gopen import gopen

    total, h, over = 0, hashlib.sha256(), False
    try:
        stream = gopen(url, "rb")
        try:
            while True:
                chunk = stream.read(min(CHUNK, limit + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    over = True
                    break
                h.update(chunk)
                sink.write(chunk)
        finally:
            proc = getattr(stream, "proc", None)
            if over and proc is not None:
                proc.kill()  # the rest is not wanted: curl or the command is stopped, its status ignored
                proc.wait()
                stream.stream.close()
            else:
                stream.close()  # raises when curl or the command failed
    except (OSError, ValueError) as e:
        raise UserError(f"could not read {printable(_shown(url))}: {transfer_error(e)}") from None
    if over:
        raise UserError(f"{printable(_shown(url))} is over {limit:,} bytes, more than it may hold")
    return total, h.hexdigest()


def _shown(url: str) -> str:
    return url if len(url) < 200 else url[:200] + "..."


def transfer_error(e: BaseException) -> str:
    """webdataset's "(...): exit 7 (read)" -> a sentence (curl's exit codes: man curl, EXIT CODES)."""
    m = re.search(r"exit (\d+)", str(e))
    if not m:  # webdataset's own, e.g. ValueError("empty file", <Pipe>, url) when the transfer gave nothing
        words = [str(a) for a in e.args if isinstance(a, str)]
        words = [w for i, w in enumerate(words) if not any(w in v for v in words[:i])]  # the URL once
        return printable(": ".join(words))[:300] if words else _first_line(e)
    code = int(m.group(1))
    known = {6: "host not found (offline?)", 7: "connection refused or host unreachable (offline?)",
             22: "the server answered with an HTTP error (404?)", 28: "timed out", 127: "command not found"}
    return f"exit status {code}" + (f", {known[code]}" if code in known else "")


def cache_root() -> Path:
    """$GOOGLENET_SHARD_CACHE, else $XDG_CACHE_HOME/googlenet/shards (~/.cache/googlenet/shards)."""
    if os.environ.get("GOOGLENET_SHARD_CACHE"):
        return Path(os.environ["GOOGLENET_SHARD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "googlenet" / "shards"


def stage(data: str, shards: list[dict]) -> list[str]:
    """Local copies of the remote ``shards`` (index entries: file, bytes, sha256) of the set ``data``, reused when
    a copy already there has the declared size and digest. Each copy is written to a temporary name and renamed,
    so two ranks staging together, or a run killed halfway, leave no half file."""
    folder = cache_root() / hashlib.sha256(root_of(data).encode()).hexdigest()[:16]
    paths = []
    for entry in shards:
        name, size, digest = entry.get("file", ""), entry.get("bytes"), entry.get("sha256")
        if not isinstance(size, int) or size < 0:
            raise UserError(f"{printable(data)}: the index gives no byte size for {printable(name)!r}, which a "
                            "remote shard needs (write the set again with this version of googlenet shards)")
        path = folder / name
        if not (path.is_file() and path.stat().st_size == size and (not digest or sha256_of(path) == digest)):
            url = locate(data, name)
            with atomic_path(path) as tmp, open(tmp, "wb") as sink:
                got, sha = fetch(url, sink, limit=size)
                if got != size or (digest and sha != digest):
                    raise UserError(f"{printable(_shown(url))} is not the shard its index describes ({got:,} bytes "
                                    f"read, {size:,} declared{'' if not digest or sha == digest else ', another SHA-256'})")
        paths.append(str(path))
    return paths


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class Bounded(io.RawIOBase):
    """A read-only stream that refuses to go past ``limit`` bytes of ``inner`` (a shard's declared size), so a
    tar member that claims more than its shard holds cannot make the reader allocate it."""

    def __init__(self, inner: BinaryIO, limit: Optional[int], name: str) -> None:
        self.inner, self.limit, self.name, self.total = inner, limit, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        self.total += len(data)
        if self.limit is not None and self.total > self.limit:
            raise OSError(f"{printable(_shown(self.name))} is longer than the {self.limit:,} bytes its index declares")
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.inner.close()
        super().close()


def open_bounded(samples: Iterable[dict], sizes: dict) -> Iterator[dict]:
    """WebDataset's url_opener, each stream bounded by its shard's declared size (``sizes``: url -> bytes)."""
    from webdataset.gopen import gopen

    for sample in samples:
        url = sample["url"]
        yield {**sample, "stream": io.BufferedReader(Bounded(gopen(url, "rb"), sizes.get(url), url), CHUNK)}
