"""What ``embed`` reads: one image, a folder of images, or a folder of class folders (labels from their names).

The rule for a folder, torchvision ImageFolder's: visible subfolders are classes and every file under one gets its
index in the sorted class names; a folder without subfolders is a plain list of images (label -1). Files directly
under a class-layout folder belong to no class: they are reported as left out, never dropped silently.
Walking is ``googlenet.data.folder`` / ``googlenet.data.scan`` (each real folder once, no cycles, FIFOs and
devices reported, not opened): docs/safe-files.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..data.folder import Sample, class_folders, scan_image_folder, with_left_out
from ..data.scan import scan_folder
from ..errors import UserError
from ..fileio import printable


@dataclass
class Inputs:
    root: Path  # the folder the stored names are relative to
    samples: list[Sample]  # in output order; a Sample with ``skip`` is reported, not read
    names: list[str]  # per sample: its name relative to ``root`` (printable text)
    class_names: list[str]
    single: bool  # one IMAGE named: a bad file is an error, not a skip


def list_inputs(path: str | os.PathLike) -> Inputs:
    """The samples under ``path`` (see the module docstring); a missing path is one UserError line."""
    p = Path(path)
    if not os.path.lexists(p):
        raise UserError(f"not found: {printable(p)}")
    if not p.is_dir():  # a file (or a dangling link, a FIFO: reading it says why, before a byte is read)
        return Inputs(p.parent, [Sample(str(p), -1)], [printable(p.name)], [], single=True)
    classes, _ = class_folders(p)
    if classes:
        samples, class_names = scan_image_folder(p)  # what the walk left out comes back with a ``skip`` reason
        with os.scandir(p) as it:  # visible non-folders directly under p: no class folder holds them
            loose = sorted(e.path for e in it if not e.name.startswith(".") and not e.is_dir())
        samples += [Sample(f, -1, skip="not in a class folder (left out)") for f in loose]
    else:
        files, left_out = scan_folder(p)
        samples = with_left_out(p, [Sample(f, -1) for f in files], left_out)
        class_names = []
    return Inputs(p, samples, [printable(os.path.relpath(s.path, p)) for s in samples], class_names, single=False)
