"""The fused C LRN kernel (lrn_kernel.c): built once per machine with the system C compiler, loaded with ctypes.

Why C and ctypes rather than a PyTorch C++ extension: the kernel needs no PyTorch headers, so it compiles in well
under a second with any ``cc`` (a C++ extension takes a minute, inside the main job's time budget). It runs on
``torch.get_num_threads()`` OpenMP threads; loaded after torch, it shares torch's OpenMP runtime (a second runtime's
threads would spin beside torch's on a small machine). A compiler without OpenMP builds it single-threaded.

The library is cached under ``$XDG_CACHE_HOME/googlenet`` (``~/.cache/googlenet``; else a private temp folder),
named by a hash of the source, the compiler's version, the flags and this CPU's model and flags (it is built with
``-march=native``). ``$CC`` picks the compiler. Without one, or with ``GOOGLENET_NATIVE_LRN=0``, ``kernel()``
returns None and lrn.py uses its PyTorch kernel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("lrn_kernel.c")
FLAGS = ["-O3", "-fno-math-errno", "-fPIC", "-shared", "-std=c11"]  # then -march=native -fopenmp if they work

_lock = threading.Lock()
_state: dict = {}


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
    try:
        folders.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "googlenet")
    except RuntimeError:  # no home directory
        pass
    return folders + [Path(tempfile.gettempdir()) / f"googlenet-{os.getuid()}"]


def _private(folder: Path) -> bool:
    """The folder exists (made if not), is ours and nobody else can write to it: a library another user could
    have put there would run as us."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _build() -> Optional[ctypes.CDLL]:
    """The library, built or found in the cache; None on any failure (the PyTorch kernel is used then: a broken
    compiler, cache or install must not stop a model from running)."""
    try:
        cc = shlex.split(os.environ.get("CC", "cc"))
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), version.encode(), " ".join(FLAGS).encode(),
                                         _cpu_id().encode(), platform.machine().encode()])).hexdigest()[:16]
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    for folder in _folders():
        lib = folder / f"lrn-{key}.so"
        try:
            if not _private(folder):
                continue
            if not _intact(lib) and not _compile(cc, folder, lib):
                return None  # the compiler refused: no point trying another folder
            return _declare(ctypes.CDLL(str(lib)))
        except subprocess.TimeoutExpired:
            return None  # a hanging compiler: once is enough
        except (OSError, AttributeError, subprocess.SubprocessError):
            continue  # folder not writable, library unloadable or not ours: try the next folder
    return None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(lib: Path) -> bool:
    """The cached library is whole: its SHA-256 is the one written beside it after the build. A truncated library
    (a crash mid-write) would not fail to load; it would kill the process with SIGBUS when called."""
    try:
        return lib.with_suffix(".sha256").read_text() == _digest(lib)
    except OSError:
        return False


def _compile(cc: list[str], folder: Path, lib: Path) -> bool:
    """Builds into a temp file, then renames it (atomic: a concurrent process sees the whole library or none), and
    writes its digest beside it last. With OpenMP if the compiler has it, and for this CPU if it can; else plainer."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        for extra in (["-march=native", "-fopenmp"], ["-march=native"], []):
            cmd = [*cc, *FLAGS, *extra, "-o", tmp, str(SOURCE), "-lm"]
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
    """src, flushed to disk, renamed to dst."""
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    f, i64, i32, p = ctypes.c_float, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.lrn_forward.argtypes = [p, p, i64, i64, i32, f, f, f, i32]
    lib.lrn_backward.argtypes = [p, p, p, i64, i64, i32, f, f, f, i32]
    lib.lrn_forward.restype = lib.lrn_backward.restype = ctypes.c_int
    return lib


def kernel() -> Optional[ctypes.CDLL]:
    """The loaded library, built on first use; None where it cannot be (no compiler, or switched off)."""
    if os.environ.get("GOOGLENET_NATIVE_LRN", "1") == "0":
        return None
    with _lock:
        if "lib" not in _state:
            _state["lib"] = _build()
        return _state["lib"]


def supports(x: Tensor) -> bool:
    """Whether the C kernel takes this input: 4-D fp32 on the CPU in channels_last (the layout training uses),
    with at least one channel."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[1] > 0
            and x.is_contiguous(memory_format=torch.channels_last) and kernel() is not None)


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("LRN kernel: out of memory for its per-thread scratch")  # the only failure it reports


def forward(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """LRN of x (supports(x) must hold), channels_last like x."""
    y = torch.empty_like(x)
    n, c, h, w = x.shape
    _check(kernel().lrn_forward(x.data_ptr(), y.data_ptr(), n * h * w, c, size, alpha, beta, k,
                                torch.get_num_threads()))
    return y


def backward(grad: Tensor, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """dL/dx from dL/dy = grad, recomputing the denominator from x (cheaper here than keeping it)."""
    g = grad.to(torch.float32).contiguous(memory_format=torch.channels_last)
    dx = torch.empty_like(x)
    n, c, h, w = x.shape
    _check(kernel().lrn_backward(g.data_ptr(), x.data_ptr(), dx.data_ptr(), n * h * w, c, size, alpha, beta, k,
                                 torch.get_num_threads()))
    return dx
