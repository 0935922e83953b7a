"""Files in and out: the one place that opens the files a user names for reading (regular files only, bounded),
and writes that a crash or kill -9 never leaves half-written (a temp file, then a rename)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from .errors import UserError


def printable(path: str | os.PathLike) -> str:
    """A path as text that can always be printed or put in JSON (non-UTF-8 bytes become \\xNN escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def ensure_dir(path: str | os.PathLike) -> Path:
    """Creates ``path`` (and parents) and checks it can be written, or raises a one-line UserError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"output folder {path} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it is fsynced and renamed onto ``path`` atomically.

    On any error the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    ensure_dir(path.parent if str(path.parent) else ".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --- Reading the files a user names ----------------------------------------------------------------------------------
# Every image, weights file and checkpoint a user names is opened here, so one set of rules applies to every command
# and to DataLoader workers (which call the same functions): only regular files are read (symbolic links are
# followed to them), devices, FIFOs, sockets and folders are refused by their type before anything is read, nothing
# blocks on open, and no read goes past a size bound.

MiB = 1 << 20
IMAGE_BYTES_ENV = "GOOGLENET_MAX_IMAGE_BYTES"
WEIGHTS_BYTES_ENV = "GOOGLENET_MAX_WEIGHTS_BYTES"
PIXELS_ENV = "GOOGLENET_MAX_PIXELS"  # read by googlenet.data.images: the pixel bound checked from an image's header
# A 50-megapixel camera JPEG is about 25 MB; an uncompressed 8-bit RGB TIFF at the default pixel limit
# (GOOGLENET_MAX_PIXELS, 89.5 megapixels) is 268 MB. 512 MiB stays above both.
DEFAULT_MAX_IMAGE_BYTES = 512 * MiB
# The largest GoogLeNet files are about 30 MB of weights (110 MB as a checkpoint with optimizer state).
DEFAULT_MAX_WEIGHTS_BYTES = 1024 * MiB
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class Unreadable(Exception):
    """A path that is not read (missing, not a regular file, too large, refused by the system); the message says
    why in a few words, for a report line such as ``photo.jpg: skipped: not a regular file: a FIFO (named pipe)``."""


def byte_limit(env: str, default: int, *, strict: bool = True) -> int:
    """The bound set by the environment variable ``env`` (a count of bytes or pixels, with an optional binary
    K/M/G/T suffix: 512M), else ``default``. An environment variable rather than a flag, so that DataLoader workers
    and every torchrun rank see the same bound."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:i?B)?", raw, flags=re.IGNORECASE)
    value = int(m.group(1)) * _SUFFIXES[m.group(2).upper()] if m else 0
    if value < 1:
        if not strict:  # read at import time; the CLI checks the variables first (check_limits) in one line
            return default
        raise UserError(f"{env} must be a positive integer, optionally with a K, M, G or T suffix "
                        f"(e.g. 536870912 or 512M), got {raw!r}")
    return value


def check_limits() -> None:
    """Refuses a malformed GOOGLENET_MAX_* variable in one line before a command starts."""
    for env in (IMAGE_BYTES_ENV, WEIGHTS_BYTES_ENV, PIXELS_ENV):
        byte_limit(env, 1)


def max_image_bytes() -> int:
    return byte_limit(IMAGE_BYTES_ENV, DEFAULT_MAX_IMAGE_BYTES)


def max_weights_bytes() -> int:
    return byte_limit(WEIGHTS_BYTES_ENV, DEFAULT_MAX_WEIGHTS_BYTES)


def file_kind(mode: int) -> str:
    """What a stat mode names, in words ("a FIFO (named pipe)", "a character device", ...)."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "an unknown kind of file"


def _refuse(st: os.stat_result, limit: int, env: Optional[str]) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise Unreadable("is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(f"not a regular file: {file_kind(st.st_mode)}")
    if st.st_size > limit:
        hint = f" (set {env} to raise it)" if env else ""
        raise Unreadable(f"file too large: {st.st_size:,} bytes, limit {limit:,}{hint}")


def unreadable_reason(path: str | os.PathLike, e: OSError) -> str:
    """Why ``os.stat`` / ``os.open`` failed on ``path``, in words."""
    if isinstance(e, FileNotFoundError):
        return "dangling symbolic link" if os.path.islink(path) else "file not found"
    if e.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    return f"cannot read: {e.strerror or e}"


# Never wait on open (FIFO), never become a controlling terminal (tty), never leak into child processes. Flags a
# platform lacks are 0.
_OPEN_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, *, limit: int, env: Optional[str] = None) -> Iterator[tuple[BinaryIO, int]]:
    """Opens ``path`` for reading when it is a regular file (after following links) of at most ``limit`` bytes;
    yields ``(file, size)``. Raises ``Unreadable`` otherwise, before reading a byte.

    The type is checked twice: by name first, so that a device is never even opened (opening some has effects),
    then on the open descriptor, so that what is read is what was checked even if the name changed in between.
    O_NONBLOCK makes the open return at once for a FIFO that appeared in between (it would otherwise wait for a
    writer); it changes nothing for reads of a regular file.
    """
    try:
        _refuse(os.stat(path), limit, env)
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError as e:
        raise Unreadable(unreadable_reason(path, e)) from None
    try:
        st = os.fstat(fd)
        _refuse(st, limit, env)
        f = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


def read_bounded(path: str | os.PathLike, *, limit: int, env: Optional[str] = None) -> bytes:
    """The bytes of the regular file ``path``, refused (``Unreadable``) when it holds more than ``limit``.

    The size from fstat sizes the first read (no copy for the usual case); reading then goes on to the end of the
    file, still bounded, for a file that grew since or that reports no size (some /proc or FUSE files).
    """
    with open_regular(path, limit=limit, env=env) as (f, size):
        chunks, total = [], 0
        while True:
            want = min(size - total if total < size else MiB, limit + 1 - total)
            if want <= 0:
                break
            try:
                chunk = f.read(want)
            except OSError as e:
                raise Unreadable(f"cannot read: {e.strerror or e}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    if total > limit:
        hint = f" (set {env} to raise it)" if env else ""
        raise Unreadable(f"file too large: over {limit:,} bytes{hint}")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_image_file(path: str | os.PathLike) -> bytes:
    """An image file's bytes, bounded by GOOGLENET_MAX_IMAGE_BYTES (default 512 MiB)."""
    return read_bounded(path, limit=max_image_bytes(), env=IMAGE_BYTES_ENV)


@contextlib.contextmanager
def open_weights_file(path: str | os.PathLike, what: str = "weights file") -> Iterator[tuple[BinaryIO, str]]:
    """Opens a weights file or checkpoint bounded by GOOGLENET_MAX_WEIGHTS_BYTES (default 1 GiB); yields the open
    file and a name that reopens exactly it, for libraries that take only a path (safetensors): on Linux
    ``/proc/self/fd/N`` of the descriptor checked here, so a file swapped in after the check is never read.
    Anything unreadable is one ``UserError`` line naming the file."""
    try:
        with open_regular(path, limit=max_weights_bytes(), env=WEIGHTS_BYTES_ENV) as (f, _):
            proc = f"/proc/self/fd/{f.fileno()}"
            yield f, proc if os.path.exists(proc) else os.fspath(path)
    except Unreadable as e:
        text = str(e)
        if text == "file not found":
            raise UserError(f"{what} not found: {printable(path)}") from None
        raise UserError(f"cannot read {what} {printable(path)}: {text}") from None
