"""Issue 15: only regular files are read, never past a bound; folder scans visit each real folder once.

These tests check ``googlenet.fileio`` (the one reader) and ``googlenet.data.scan`` (the one walker) against the
file system itself (os.stat identities, os.walk). tests/test_safe_files_cli.py runs the commands end to end.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import torch

import googlenet
from googlenet.data.folder import ImageFolderDataset, scan_image_folder
from googlenet.data.images import BadImage, load_image
from googlenet.data.scan import scan_folder, scan_tree
from googlenet.errors import UserError
from googlenet.fileio import (IMAGE_BYTES_ENV, WEIGHTS_BYTES_ENV, Unreadable, byte_limit, open_weights_file,
                              read_bounded, read_image_file)
from tests.hostile import noise_png, peak_rss_growth, sparse_file

def _socket(path: Path) -> Path:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # the file stays after the socket closes
    return path


def _ident(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


# --- the reader ------------------------------------------------------------------------------------------------------

@pytest.mark.timeout(20)
@pytest.mark.parametrize("name,make,reason", [
    ("fifo", lambda p: os.mkfifo(p) or p, "not a regular file: a FIFO"),
    ("dev_zero", lambda p: Path("/dev/zero"), "not a regular file: a character device"),
    ("dev_urandom", lambda p: Path("/dev/urandom"), "not a regular file: a character device"),
    ("link_to_dev_zero", lambda p: p.symlink_to("/dev/zero") or p, "not a regular file: a character device"),
    ("sparse_3gb", sparse_file, "file too large: 3,221,225,472 bytes, limit 536,870,912 (set GOOGLENET_MAX_IMAGE_BYTES"),
    ("folder", lambda p: p.mkdir() or p, "is a directory"),
    ("socket", lambda p: _socket(p), "not a regular file: a socket"),
    ("dangling", lambda p: p.symlink_to(p.with_name("nowhere")) or p, "dangling symbolic link"),
    ("link_loop", lambda p: p.symlink_to(p.name) or p, "symbolic link loop"),
    ("missing", lambda p: p, "file not found"),
])
def test_what_is_not_a_bounded_regular_file_is_refused_before_any_read(tmp_path, name, make, reason):
    path = make(tmp_path / f"{name}.jpg")
    t0 = time.perf_counter()
    with peak_rss_growth() as grown, pytest.raises(Unreadable) as e:
        read_image_file(path)
    assert str(e.value).startswith(reason), str(e.value)
    assert time.perf_counter() - t0 < 5.0  # a FIFO would block forever, /dev/zero would read until memory ran out
    assert grown["kib"] < 50_000, grown  # KiB
    with pytest.raises(BadImage, match=reason.split(" (")[0].replace("(", r"\(")):
        load_image(path)


def test_a_fifo_with_a_writer_waiting_is_still_refused(tmp_path):
    """Even with data on offer, a FIFO is refused by its type and nothing is consumed from it."""
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # holds both ends: the pipe exists and has data
    os.write(fd, noise_png(tmp_path / "a.png").read_bytes()[:1000])
    try:
        with pytest.raises(Unreadable, match="FIFO"):
            read_image_file(fifo)
        assert len(os.read(fd, 4096)) == 1000  # the data is still there: nothing was read from the pipe
    finally:
        os.close(fd)


def test_bound_is_configurable_and_exact(tmp_path, monkeypatch):
    data = noise_png(tmp_path / "a.png").read_bytes()
    path = tmp_path / "a.png"
    assert read_bounded(path, limit=len(data)) == data
    with pytest.raises(Unreadable, match=f"file too large: {len(data):,} bytes, limit {len(data) - 1:,}"):
        read_bounded(path, limit=len(data) - 1)
    monkeypatch.setenv(IMAGE_BYTES_ENV, str(len(data) - 1))
    with pytest.raises(BadImage, match="GOOGLENET_MAX_IMAGE_BYTES"):
        load_image(path)
    monkeypatch.setenv(IMAGE_BYTES_ENV, "1K")
    assert byte_limit(IMAGE_BYTES_ENV, 7) == 1024
    for value, expected in (("512M", 512 << 20), ("2GiB", 2 << 30), ("100", 100), (" 3 kb ", 3072)):
        monkeypatch.setenv(WEIGHTS_BYTES_ENV, value)
        assert byte_limit(WEIGHTS_BYTES_ENV, 7) == expected
    for bad in ("0", "-5", "lots", "1.5G", "12Q"):
        monkeypatch.setenv(IMAGE_BYTES_ENV, bad)
        with pytest.raises(UserError, match=f"GOOGLENET_MAX_IMAGE_BYTES must be a positive integer.*{bad!r}"):
            read_image_file(path)


def test_files_without_a_size_are_read_to_the_end_but_bounded():
    """/proc files are regular and report size 0: they are read in chunks, never past the bound."""
    text = read_bounded("/proc/self/status", limit=1 << 20)
    assert text.startswith(b"Name:") and b"VmRSS" in text
    with pytest.raises(Unreadable, match="file too large: over 10 bytes"):
        read_bounded("/proc/self/status", limit=10)


def test_a_link_to_a_regular_file_anywhere_is_read(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "in").mkdir()
    target = noise_png(tmp_path / "elsewhere" / "pic.png")
    (tmp_path / "in" / "link.png").symlink_to(target)
    assert torch.equal(load_image(tmp_path / "in" / "link.png"), load_image(target))
    assert load_image(target).shape == (3, 40, 48)


# --- weights and checkpoints -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    return googlenet.save_model(googlenet.create_model("googlenet_bn", num_classes=3), root / "w.safetensors",
                                class_names=["a", "b", "c"])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("make,fragment", [
    (lambda p, w: os.mkfifo(p), "not a regular file: a FIFO"),
    (lambda p, w: p.symlink_to("/dev/zero"), "not a regular file: a character device"),
    (lambda p, w: sparse_file(p), "file too large: 3,221,225,472 bytes, limit 1,073,741,824 (set GOOGLENET_MAX_WEIGHTS"),
    (lambda p, w: p.write_bytes(w.read_bytes()[:5000]), "-byte header, more than the file's 5,000 bytes"),
    (lambda p, w: p.write_bytes(w.read_bytes()[:-1000]), "truncated: the file has"),
    (lambda p, w: p.write_bytes(w.read_bytes() + b"\0" * 8), "extra bytes: the file has"),
    (lambda p, w: p.write_bytes(b"\xff" * 8 + b"{}"), "declare a 18,446,744,073,709,551,615-byte header"),
])
def test_weights_files_are_regular_and_as_long_as_their_header_says(tmp_path, weights, make, fragment):
    path = tmp_path / "bad.safetensors"
    make(path, weights)
    for load in (googlenet.read_metadata, googlenet.load_model):
        with pytest.raises(UserError) as e:
            load(path)
        assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_weights_are_read_from_the_checked_descriptor(tmp_path, weights):
    """safetensors is handed /proc/self/fd/N of the checked descriptor: a name swapped afterwards is not read."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(weights.read_bytes())
    with open_weights_file(path) as (f, name):
        assert name == f"/proc/self/fd/{f.fileno()}"
        path.unlink()
        os.mkfifo(path)  # the name now leads to a FIFO; the open descriptor still holds the weights
        model = googlenet.weights._load_model(f, name, path, None, None, "cpu")
    assert model.class_names == ["a", "b", "c"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in googlenet.load_model(weights).state_dict().items())


def test_weights_bound_is_configurable(tmp_path, weights, monkeypatch):
    size = weights.stat().st_size
    monkeypatch.setenv(WEIGHTS_BYTES_ENV, str(size - 1))
    with pytest.raises(UserError, match=f"file too large: {size:,} bytes, limit {size - 1:,}"):
        googlenet.load_model(weights)
    monkeypatch.setenv(WEIGHTS_BYTES_ENV, str(size))
    assert googlenet.load_model(weights).num_classes == 3


@pytest.mark.timeout(30)
def test_checkpoints_and_configs_go_through_the_same_reader(tmp_path):
    from googlenet.pretrained.torchvision_pth import read_checkpoint
    from googlenet.train.checkpoint import load_checkpoint
    from googlenet.train.config import load_config_file

    fifo = tmp_path / "x.pt"
    os.mkfifo(fifo)
    for read, what in ((read_checkpoint, "checkpoint"), (load_checkpoint, "checkpoint"),
                       (load_config_file, "config file")):
        for path, reason in ((fifo, "a FIFO"), ("/dev/zero", "a character device")):
            with pytest.raises(UserError, match=f"cannot read {what} {path}: not a regular file: {reason}"):
                read(str(path))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(UserError, match="config file .* too large"):
        load_config_file(str(big))


# --- the walker ------------------------------------------------------------------------------------------------------

def _tree(root: Path) -> dict:
    """A folder with every kind of link; returns what each name is."""
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    outside = root.parent / f"{root.name}_outside"
    (outside / "more").mkdir(parents=True)
    made = {name: noise_png(path, i) for i, (name, path) in enumerate([
        ("a1", root / "a" / "1.png"), ("deep", root / "a" / "deep" / "2.png"), ("b3", root / "b" / "3.png"),
        ("out", outside / "o.png"), ("more", outside / "more" / "m.png")])}
    (root / "a" / "0_alias.png").symlink_to("1.png")  # sorts before its target: the real name must win
    (root / "b" / "up").symlink_to("..")  # a cycle
    (root / "b" / "top").symlink_to("/")  # a cycle through the file system root: never walked
    (root / "b" / "self").symlink_to(".")  # a cycle
    (root / "b" / "to_a").symlink_to("../a")  # a folder already walked under its own name
    (root / "b" / "ext").symlink_to(outside)  # a folder outside: walked once, under the link's name
    (root / "b" / "ext_again").symlink_to(outside)  # the same folder again
    (outside / "back").symlink_to(root)  # from outside back in: contains the root, a cycle
    (root / "b" / "out_file.png").symlink_to(outside / "o.png")  # the same file as ext/o.png: listed once
    (root / "b" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "b" / "loop.jpg").symlink_to("loop.jpg")
    os.mkfifo(root / "b" / "fifo.png")
    (root / "b" / "zero.jpg").symlink_to("/dev/zero")
    (root / ".hidden").mkdir()
    noise_png(root / ".hidden" / "h.png")
    return made


def test_scan_visits_each_real_folder_once_and_reports_the_rest(tmp_path):
    root = tmp_path / "root"
    made = _tree(root)
    files, skipped = scan_folder(root)
    # Each image once, identified by the file system itself (device, inode): no duplicates, none missing.
    assert sorted(map(_ident, files)) == sorted(map(_ident, made.values()))
    assert len(files) == len(made) == 5
    rel = {os.path.relpath(f, root) for f in files}
    assert rel == {"a/1.png", "a/deep/2.png", "b/3.png", "b/out_file.png", "b/ext/more/m.png"}
    why = {os.path.relpath(s.path, root): s.reason for s in skipped}
    assert why == {
        "a/0_alias.png": f"same file as {root}/a/1.png",
        "b/up": f"link to a folder that contains it (a cycle): {root}",
        "b/top": "link to a folder that contains it (a cycle): /",
        "b/self": f"link to a folder that contains it (a cycle): {root}/b",
        "b/to_a": f"link to a folder already scanned: {root}/a",
        "b/ext_again": f"link to a folder already scanned: {root}/b/ext",
        "b/ext/back": f"link to a folder that contains it (a cycle): {root}",
        "b/ext/o.png": f"same file as {root}/b/out_file.png",
        "b/dangling.jpg": "dangling symbolic link",
        "b/loop.jpg": "symbolic link loop (too many levels of symbolic links)",
        "b/fifo.png": "not a regular file: a FIFO (named pipe)",
        "b/zero.jpg": "not a regular file: a character device",
    }


def test_hard_links_are_one_file(tmp_path):
    """Without symbolic links the identities come from the folder listing alone (no stat per file)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    noise_png(tmp_path / "b" / "pic.png")
    os.link(tmp_path / "b" / "pic.png", tmp_path / "a" / "same.png")
    noise_png(tmp_path / "a" / "other.png", 1)
    files, skipped = scan_folder(tmp_path)
    assert [os.path.relpath(f, tmp_path) for f in files] == ["a/other.png", "a/same.png"]
    assert [(s.path, s.reason) for s in skipped] == [(str(tmp_path / "b" / "pic.png"),
                                                      f"same file as {tmp_path / 'a' / 'same.png'}")]


def test_scan_against_os_walk_on_a_tree_without_links(tmp_path):
    """Without links the walker lists exactly what os.walk lists (hidden names aside), in tree order."""
    for i, rel in enumerate(["x/1.png", "x/y/2.png", "x/y/z/3.png", "w.png", "x/0.txt", "x/y/a b.png"]):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(bytes([i]))
    reference = []
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        dirnames.sort()
        reference += [os.path.join(dirpath, f) for f in sorted(filenames)]
    files, skipped = scan_folder(tmp_path)
    assert sorted(files) == sorted(reference) and not skipped
    assert files == sorted(reference, key=lambda p: p.split(os.sep))


def test_scan_reports_unreadable_folders(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    noise_png(tmp_path / "locked" / "hidden_from_us.png")
    noise_png(tmp_path / "ok.png")
    if os.geteuid() == 0:  # root reads any folder: make the system refuse this one as it would refuse a user
        real_scandir = os.scandir

        def scandir(path):
            if os.fspath(path) == str(tmp_path / "locked"):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    os.chmod(tmp_path / "locked", 0)
    try:
        files, skipped = scan_folder(tmp_path)
    finally:
        os.chmod(tmp_path / "locked", stat.S_IRWXU)
    assert [Path(f).name for f in files] == ["ok.png"]
    assert [(Path(s.path).name, s.reason) for s in skipped] == [("locked", "cannot read folder: Permission denied")]


def test_class_folders_that_link_into_each_other_keep_their_own_images(tmp_path):
    """A class folder's link to another class (or to the data root) never relabels that class's images."""
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        noise_png(tmp_path / c / f"{c}.png")
    (tmp_path / "cat" / "dogs").symlink_to("../dog")  # sorts before... nothing: dog is its own class
    (tmp_path / "cat" / "dog_pic.png").symlink_to("../dog/dog.png")
    (tmp_path / "alias_cat").symlink_to("cat")  # a class folder link: not a class of its own
    (tmp_path / "loop").symlink_to(".")
    samples, names = scan_image_folder(tmp_path)
    assert names == ["cat", "dog"]
    good = {(os.path.relpath(s.path, tmp_path), s.label) for s in samples if s.skip is None}
    assert good == {("cat/cat.png", 0), ("dog/dog.png", 1)}
    why = {os.path.relpath(s.path, tmp_path): s.skip for s in samples if s.skip is not None}
    assert why == {"alias_cat": f"link to a class folder already scanned: {tmp_path}/cat",
                   "loop": f"link to a folder that contains it (a cycle): {tmp_path}",
                   "cat/dogs": f"link to a folder already scanned: {tmp_path}/dog",
                   "cat/dog_pic.png": f"same file as {tmp_path}/dog/dog.png"}
    ds = ImageFolderDataset(samples)
    assert sum(not isinstance(ds[i], tuple) for i in range(len(ds))) == 4  # left-out paths come back as Skipped


def test_scan_tree_shares_one_walk_between_roots(tmp_path):
    noise_png(tmp_path / "1.png")
    (tmp_path / "sub").mkdir()
    noise_png(tmp_path / "sub" / "2.png")
    found, skipped = scan_tree([tmp_path, tmp_path / "sub", tmp_path])
    # sub/ is a root of its own, so its file is listed under it; the walk of the first root does not enter it again.
    assert [(f.root, Path(f.path).name) for f in found] == [(0, "1.png"), (1, "2.png")]
    sub = tmp_path / "sub"
    assert sorted((s.path, s.reason) for s in skipped) == [(str(tmp_path), f"same folder as {tmp_path}"),
                                                           (str(sub), f"same folder as {sub}")]
