"""Walking the folders a user names: every real folder once, no cycles, every file once, what was left out reported.

The rules (docs/safe-files.md):

* Hidden names (starting with ".") are not listed, as before.
* A symbolic link to a folder is followed, but each real folder (device, inode) is walked at most once. Folders
  reached without links are walked first, so their files keep their own names; a link to a folder already walked is
  reported ("link to a folder already scanned: ..."), never walked again under a longer name. A link to a folder
  that contains the scanned folder (``loop -> ..``, ``-> /``) is a cycle and is reported, not walked.
* A link to a file anywhere (outside the folder too) is read like the file itself: a user's folder that links to
  their own pictures is normal. The same file reached under two names (two links, a link and the file, hard links)
  is listed once, under its own name when it has one; the other names are reported as duplicates.
* A dangling link, a link loop, a FIFO, a socket or a device is reported with its reason and never opened.

``os.walk(followlinks=True)`` does none of this (it loops until ELOOP, listing files again at every level), hence
this small walker over ``os.scandir``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

from ..fileio import file_kind, printable, unreadable_reason

Key = tuple[int, int]  # (st_dev, st_ino): the identity of a file or folder, whatever name reaches it


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    path: str
    reason: str

    def as_dict(self) -> dict:
        return {"file": printable(self.path), "error": self.reason}


class Found(NamedTuple):  # a plain tuple: cheap to make for each of a million files
    root: int  # index of the folder (in the roots given to ``scan_tree``) the file was found under
    path: str


def _key(st: os.stat_result) -> Key:
    return st.st_dev, st.st_ino


def ancestors(path: str | os.PathLike) -> dict[Key, str]:
    """The identities of ``path``'s real folder and of every folder above it, up to "/"."""
    out: dict[Key, str] = {}
    current = Path(os.path.realpath(path))
    for folder in (current, *current.parents):
        with contextlib.suppress(OSError):
            out.setdefault(_key(os.stat(folder)), str(folder))
    return out


class _Walker:
    def __init__(self, roots: Sequence[str | os.PathLike]) -> None:
        self.roots = [os.fspath(r) for r in roots]
        self.walked: dict[Key, str] = {}  # real folders walked (or queued), and the name that reached them first
        self.enclosing: dict[int, dict[Key, str]] = {}  # per root, the folders that contain it (links: cycles)
        self.links: list[tuple[int, str]] = []  # links to folders, followed after every real folder
        self.files: list[tuple[int, str, Key, bool]] = []  # (root, path, identity, reached through a link)
        self.skipped: list[Skipped] = []
        # Identities from the folder listing (d_ino) and from stat (st_ino) agree on ext4, xfs, btrfs, tmpfs, but
        # not on every overlayfs: when both kinds occur (links to files), the listed ones are stat'ed to compare.
        self.listed_keys = self.stat_keys = 0

    def run(self) -> tuple[list[Found], list[Skipped]]:
        queue: list[tuple[int, str]] = []
        for i, root in enumerate(self.roots):
            try:
                key = _key(os.stat(root))
            except OSError as e:
                self.skipped.append(Skipped(root, unreadable_reason(root, e)))
                continue
            if key in self.walked:
                self.skipped.append(Skipped(root, f"same folder as {printable(self.walked[key])}"))
                continue
            self.walked[key] = root
            self.enclosing[i] = ancestors(root)
            queue.append((i, root))
        for i, root in queue:
            self._walk(i, root, via_link=False)
        # Links last, so that a folder reachable both ways is named by its real path. Following a link may find
        # more links: the list grows while it is read, and ends because each real folder is walked at most once.
        for i, link in self.links:
            try:
                key = _key(os.stat(link))
            except OSError as e:  # removed since it was listed
                self.skipped.append(Skipped(link, unreadable_reason(link, e)))
                continue
            around = self._containing(i, link)
            if key in around:
                self.skipped.append(Skipped(link, f"link to a folder that contains it (a cycle): "
                                                  f"{printable(around[key])}"))
            elif key in self.walked:
                self.skipped.append(Skipped(link, f"link to a folder already scanned: {printable(self.walked[key])}"))
            else:
                self.walked[key] = link
                self._walk(i, link, via_link=True)
        return self._unique_files(), sorted(self.skipped, key=lambda s: s.path)

    def _containing(self, root: int, link: str) -> dict[Key, str]:
        """The folders that hold ``link`` along the path the walk took (through links too), and the root's own
        ancestors: a link to any of them leads back to itself."""
        out = dict(self.enclosing[root])
        top, folder = self.roots[root], os.path.dirname(link)
        while len(folder) > len(top):  # the walk's names all start with the root's
            with contextlib.suppress(OSError):
                out.setdefault(_key(os.stat(folder)), folder)
            folder = os.path.dirname(folder)
        return out

    @staticmethod
    def _stat_key(path: str, listed: Key) -> Key:
        try:
            return _key(os.stat(path))
        except OSError:  # gone since it was listed: reading it will say so
            return listed

    def _walk(self, root: int, top: str, *, via_link: bool) -> None:
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                device = os.stat(folder).st_dev  # the device of every plain file listed in this folder
                with os.scandir(folder) as it:
                    entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
            except OSError as e:
                self.skipped.append(Skipped(folder, f"cannot read folder: {e.strerror or e}"))
                continue
            subfolders = []
            for entry in entries:
                try:
                    # A plain file costs no system call: its type and inode come with the folder listing (d_type,
                    # d_ino), as in os.walk; ImageNet's 1.28M files are listed as fast as before. Links, folders
                    # (mount points change the device) and everything else are stat'ed.
                    is_link = entry.is_symlink()
                    if not is_link and entry.is_file(follow_symlinks=False):
                        self.files.append((root, entry.path, (device, entry.inode()), via_link))
                        self.listed_keys += 1
                        continue
                    st = os.stat(entry.path)  # follows links: what the name leads to
                except OSError as e:
                    self.skipped.append(Skipped(entry.path, unreadable_reason(entry.path, e)))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if is_link:
                        self.links.append((root, entry.path))
                    elif _key(st) in self.walked:  # a bind mount or a root listed inside another root
                        self.skipped.append(Skipped(entry.path, f"same folder as {printable(self.walked[_key(st)])}"))
                    else:
                        self.walked[_key(st)] = entry.path
                        subfolders.append(entry.path)
                elif stat.S_ISREG(st.st_mode):
                    self.files.append((root, entry.path, _key(st), via_link or is_link))
                    self.stat_keys += 1
                else:
                    self.skipped.append(Skipped(entry.path, f"not a regular file: {file_kind(st.st_mode)}"))
            stack.extend(reversed(subfolders))  # depth first, in name order

    def _unique_files(self) -> list[Found]:
        """Each file once: under the first name reached without a link, else the first name."""
        if self.listed_keys and self.stat_keys:
            self.files = [(r, p, self._stat_key(p, k), link) for r, p, k, link in self.files]
        chosen: dict[Key, tuple[int, str, Key, bool]] = {}
        for f in self.files:
            kept = chosen.get(f[2])
            if kept is None or (kept[3] and not f[3]):
                chosen[f[2]] = f
        self.skipped += [Skipped(f[1], f"same file as {printable(chosen[f[2]][1])}") for f in self.files
                         if chosen[f[2]] is not f]
        return sorted((Found(r, p) for r, p, _, _ in chosen.values()), key=lambda f: (f.root, f.path.split(os.sep)))


def scan_tree(roots: Sequence[str | os.PathLike]) -> tuple[list[Found], list[Skipped]]:
    """Every visible regular file under the folders ``roots`` (recursively), each once, sorted per root; and what
    was left out with the reason (links to folders already scanned, cycles, duplicates, dangling links, FIFOs,
    devices, unreadable folders). The roots share one walk: a file under two of them is listed once."""
    # The walk makes a few tuples per file and no reference cycles; the cyclic garbage collector would otherwise
    # rescan them over and over (measured: 0.35 s against 0.12 s for 30,000 files), so it rests meanwhile.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _Walker(roots).run()
    finally:
        if enabled:
            gc.enable()


def scan_folder(folder: str | os.PathLike) -> tuple[list[str], list[Skipped]]:
    """``scan_tree`` for one folder: (files, skipped)."""
    found, skipped = scan_tree([folder])
    return [f.path for f in found], skipped
