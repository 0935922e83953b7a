"""Small C kernels built on first use with the system C compiler and loaded with ctypes (the LRN's; the data
path's resize and photometric distortions).

Why C and ctypes rather than PyTorch C++ extensions: these kernels need no PyTorch headers, so each compiles in well
under a second with any ``cc`` (a C++ extension takes a minute, inside the main job's time budget). Loaded after
torch, an OpenMP kernel shares torch's OpenMP runtime (a second runtime's threads would spin beside torch's on a
small machine). A compiler without OpenMP builds it single-threaded.

Each library is cached under ``$XDG_CACHE_HOME/googlenet`` (``~/.cache/googlenet``; else a private temp folder),
named by its source file's stem and a hash of the source, the compiler's version, the flags and this CPU's model
and flags (it is built with ``-march=native``). ``$CC`` picks the compiler. Without one, ``Library.get()`` returns
None and the caller uses its PyTorch path: a broken compiler, cache or install must not stop anything from running.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional

import torch

FLAGS = ["-O3", "-fno-math-errno", "-fPIC", "-shared", "-std=c11"]  # then -march=native -fopenmp if they work


class Library:
    """One C source's shared library: built (or found in the cache) on the first ``get()``, then kept.
    ``declare`` sets the ctypes signatures; ``switch``: an environment variable that turns it off when "0"."""

    def __init__(self, source: Path, declare: Callable[[ctypes.CDLL], ctypes.CDLL], switch: str) -> None:
        self.source, self.declare, self.switch = source, declare, switch
        self.state: dict = {}
        self._lock = threading.Lock()
        # Whether get() gives a library, for code that torch.compile or torch.export may trace: there it is called,
        # not traced (the lock cannot be), and its answer is a constant of the graph (the switch is read then).
        self.available = torch.compiler.assume_constant_result(lambda: self.get() is not None)

    def get(self) -> Optional[ctypes.CDLL]:
        if os.environ.get(self.switch, "1") == "0":
            return None
        with self._lock:
            if "lib" not in self.state:
                self.state["lib"] = build(self.source, self.declare)
            return self.state["lib"]

    def loaded(self) -> ctypes.CDLL:
        """get()'s library, for a custom op's implementation: it runs where available() said yes when it was traced."""
        lib = self.get()
        if lib is None:
            raise RuntimeError(f"{self.source.name}: its library is off ({self.switch}=0 or no compiler) but a graph "
                               f"that calls it was traced while it was on; set {self.switch} before compiling")
        return lib


def _cpu_id() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(keep))


def _folders() -> list[Path]:
    """Where the library may live: the user's cache, else a private temp folder."""
    folders = []
    with contextlib.suppress(RuntimeError):  # no home directory
        folders.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "googlenet")
    return folders + [Path(tempfile.gettempdir()) / f"googlenet-{os.getuid()}"]


def _private(folder: Path) -> bool:
    """The folder exists (made if not), is ours and nobody else can write to it: a library another user could
    have put there would run as us."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def build(source: Path, declare: Callable[[ctypes.CDLL], ctypes.CDLL]) -> Optional[ctypes.CDLL]:
    """The library of ``source``, built or found in the cache, with ``declare``'s signatures; None on any failure."""
    try:
        cc = shlex.split(os.environ.get("CC", "cc"))
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256(b"\0".join([source.read_bytes(), version.encode(), " ".join(FLAGS).encode(),
                                         _cpu_id().encode(), platform.machine().encode()])).hexdigest()[:16]
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    for folder in _folders():
        lib = folder / f"{source.stem.removesuffix('_kernel')}-{key}.so"
        try:
            if not _private(folder):
                continue
            if not intact(lib) and not _compile(cc, source, folder, lib):
                return None  # the compiler refused: no point trying another folder
            return declare(ctypes.CDLL(str(lib)))
        except subprocess.TimeoutExpired:
            return None  # a hanging compiler: once is enough
        except (OSError, AttributeError, subprocess.SubprocessError):
            continue  # folder not writable, library unloadable or not ours: try the next folder
    return None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def intact(lib: Path) -> bool:
    """The cached library is whole: its SHA-256 is the one written beside it after the build. A truncated library
    (a crash mid-write) would not fail to load; it would kill the process with SIGBUS when called."""
    try:
        return lib.with_suffix(".sha256").read_text() == _digest(lib)
    except OSError:
        return False


def _compile(cc: list[str], source: Path, folder: Path, lib: Path) -> bool:
    """Builds into a temp file, then renames it (atomic: a concurrent process sees the whole library or none), and
    writes its digest beside it last. With OpenMP if the compiler has it, and for this CPU if it can; else plainer."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        for extra in (["-march=native", "-fopenmp"], ["-march=native"], []):
            cmd = [*cc, *FLAGS, *extra, "-o", tmp, str(source), "-lm"]
            if subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0:
                _fsync_replace(tmp, lib)
                fd, digest = tempfile.mkstemp(dir=folder)
                with os.fdopen(fd, "w") as f:
                    f.write(_digest(lib))
                _fsync_replace(digest, lib.with_suffix(".sha256"))
                return True
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_replace(src: str, dst: Path) -> None:
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)
