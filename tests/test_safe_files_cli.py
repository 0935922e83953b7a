"""Issue 15, end to end: predict, eval, crops and train (one process and torchrun) on a folder holding a FIFO,
links to /dev/zero and /dev/urandom, a sparse 3 GB ".jpg", a symlink cycle, a link to a file outside and a
dangling link. Commands run in child processes whose bytes read (/proc/self/io rchar, reaped workers included),
wall time and peak memory (VmHWM, getrusage) are measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import googlenet
from tests.hostile import noise_png, sparse_file

GIB_KIB = 1 << 20  # getrusage reports KiB

pytestmark = pytest.mark.slow

# --- the commands, end to end ----------------------------------------------------------------------------------------

HOSTILE = {  # name in each class folder -> the reason it is reported with
    "fifo.png": "not a regular file: a FIFO (named pipe)",
    "zero.jpg": "not a regular file: a character device",
    "urandom.jpg": "not a regular file: a character device",
    "sparse.jpg": "file too large: 3,221,225,472 bytes, limit 536,870,912",
    "loop": "link to a folder that contains it (a cycle)",
    "dangling.jpg": "dangling symbolic link",
}


def _hostile(folder: Path, outside: Path) -> None:
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "urandom.jpg").symlink_to("/dev/urandom")
    sparse_file(folder / "sparse.jpg")
    (folder / "loop").symlink_to("..")
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "outside.png").symlink_to(outside)  # a good image, counted once


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    outside = noise_png(root / "outside.png", 99)
    data = root / "data"
    for split, n in (("train", 3), ("val", 1)):
        for c, cls in enumerate(("cat", "dog")):
            d = data / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                noise_png(d / f"{i}.png", 10 * c + i)
            _hostile(d, outside)
    torch.manual_seed(0)
    w = googlenet.save_model(googlenet.create_model("googlenet", num_classes=2), root / "w.safetensors",
                             class_names=["cat", "dog"], preprocessing={"input_size": 64, "resize_size": 64})
    return {"root": root, "data": data, "weights": w}


# Runs googlenet's CLI in this child process for each argv and reports rc, output, seconds, the process's peak
# resident memory after each command (VmHWM: a high-water mark, so it bounds every command run so far) and that of
# its reaped children (DataLoader workers). One child for many commands saves the 3-5 s of importing torch each time.
_PROBE = r"""
import contextlib, io, json, resource, sys, time
from googlenet.cli import main
import torch  # noqa: F401  (imported before the baseline, as every command imports it)
def rss_kib(key="VmHWM:"):
    # The peak RSS of this process's own memory since exec (VmHWM). ru_maxrss would carry the parent's RSS at fork
    # across exec: under a big pytest process that is over 1 GiB before this child does anything.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))
hwm_kib = rss_kib
def rchar():
    # Bytes this process and its reaped children (DataLoader workers) got from read() calls: files, pipes, devices.
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
baseline = rss_kib("VmRSS:")  # after importing torch and the CLI: 0.7-0.95 GiB, depending on the page cache
out = []
for argv in json.loads(sys.argv[1]):
    o, e = io.StringIO(), io.StringIO()
    t0, r0 = time.perf_counter(), rchar()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = main(argv)
        except SystemExit as x:
            rc = x.code
    out.append({"argv": argv, "rc": rc, "stdout": o.getvalue(), "stderr": e.getvalue(),
                "seconds": time.perf_counter() - t0, "read_bytes": rchar() - r0,
                "peak_kib": hwm_kib(),
                "workers_peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "baseline_kib": baseline})
print(json.dumps(out))
"""


def probe(argvs: list[list], timeout: float) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([[str(a) for a in v] for v in argvs])],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung: {argvs} did not finish in {timeout} s")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    for r in runs:
        print(f"{' '.join(r['argv'][:1])}: rc {r['rc']}, {r['seconds']:.2f} s, peak {r['peak_kib'] / 1024:.0f} MiB, "
              f"workers' peak {r['workers_peak_kib'] / 1024:.0f} MiB, read {r['read_bytes'] / 2**20:.1f} MiB")
    return runs


def _rel(path: str, data: Path) -> str:
    return os.path.relpath(path, data)


def _expected_reports(split: str) -> dict:
    return {f"{split}/{c}/{name}": reason for c in ("cat", "dog") for name, reason in HOSTILE.items()}


def _check_reports(reports: dict, expected: dict) -> None:
    assert set(reports) == set(expected), sorted(set(reports) ^ set(expected))
    for k, reason in expected.items():
        assert reports[k].startswith(reason), (k, reports[k])


def test_predict_eval_crops_on_hostile_files(hostile):
    data, w = hostile["data"], hostile["weights"]
    val = data / "val"
    cases = [
        ["predict", data, "--weights", w, "--json", "--workers", "2"],
        ["predict", "/dev/zero", "/dev/urandom", val / "cat/fifo.png", val / "cat/sparse.jpg",
         val / "cat/dangling.jpg", "--weights", w, "--json"],
        ["predict", val / "cat/loop", "--weights", w, "--json"],
        ["eval", "--weights", w, "--data", data, "--json", "--workers", "2"],
        *[["crops", path, "--out", hostile["root"] / "sheet.png", "--scheme", "10", "--crop-size", "64"]
          for path in ("/dev/zero", "/dev/urandom", val / "cat/fifo.png", val / "cat/sparse.jpg",
                       val / "cat/dangling.jpg")],
    ]
    runs = probe(cases, timeout=300)
    for r in runs:
        # The hostile entries are refused before a byte of them is read: /dev/zero, /dev/urandom or the sparse
        # 3 GB file read up to the 512 MiB limit would add hundreds of MiB (measured: 0-1.2 MiB per command, the
        # good images and the weights' header). A FIFO read would hang: the probe's timeout fails the test.
        assert r["read_bytes"] < 16 * 2**20, (r["argv"][:2], r["read_bytes"])
        # What the command itself adds must stay small. ``import torch`` alone holds 0.7-0.95 GiB of this process
        # (more in a freshly installed venv, whose library pages sit in larger page-cache folios), so the issue's
        # 1 GiB is asserted on the command's own growth: at most 256 MiB above the post-import baseline, and the
        # whole process under 1.5 GiB.
        grown = max(r["peak_kib"], r["workers_peak_kib"]) - r["baseline_kib"]
        assert grown < 256 * 1024, (r["argv"][:2], r["baseline_kib"], r["peak_kib"], r["workers_peak_kib"])
        assert r["peak_kib"] < 1.5 * GIB_KIB, (r["argv"][:2], r["peak_kib"])
        assert "Traceback" not in r["stderr"]

    # predict on the folder: every good image once, the outside file under the first link's name; the rest reported.
    pred = runs[0]
    assert pred["rc"] == 0, pred["stderr"]
    res = json.loads(pred["stdout"].strip().splitlines()[-1])
    good = sorted(_rel(p["image"], data) for p in res["predictions"])
    assert good == sorted(["train/cat/outside.png"] + [f"{s}/{c}/{i}.png" for s, n in (("train", 3), ("val", 1))
                                                       for c in ("cat", "dog") for i in range(n)])
    errors = {_rel(e["image"], data): e["error"] for e in res["errors"]}
    expected = {**_expected_reports("train"), **_expected_reports("val")}
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            if (split, c) != ("train", "cat"):
                expected[f"{split}/{c}/outside.png"] = f"same file as {data}/train/cat/outside.png"
    _check_reports(errors, expected)

    # predict on bad paths only: one line, exit 2; the JSON names each reason.
    bad = runs[1]
    assert bad["rc"] == 2 and bad["stderr"].count("\n") == 1, bad["stderr"]
    assert "no readable image among 5 input(s)" in bad["stderr"]
    reasons = [e["error"] for e in json.loads(bad["stdout"].strip().splitlines()[-1])["errors"]]
    assert reasons == ["not a regular file: a character device"] * 2 + [
        "not a regular file: a FIFO (named pipe)", HOSTILE["sparse.jpg"] + " (set GOOGLENET_MAX_IMAGE_BYTES to "
        "raise it)", "dangling symbolic link"]

    # predict on the cycle link itself: the folder it leads to is walked once, the link inside is the cycle.
    loop = runs[2]
    assert loop["rc"] == 0, loop["stderr"]
    res = json.loads(loop["stdout"].strip().splitlines()[-1])
    assert sorted(_rel(p["image"], val / "cat/loop") for p in res["predictions"]) == [
        "cat/0.png", "cat/outside.png", "dog/0.png"]
    errors = {_rel(e["image"], val / "cat/loop"): e["error"] for e in res["errors"]}
    assert errors["cat/loop"] == errors["dog/loop"] == f"link to a folder that contains it (a cycle): {val}"

    # eval: val/ has one good image per class plus the outside link (the same file in both classes: once).
    ev = runs[3]
    assert ev["rc"] == 0, ev["stderr"]
    res = json.loads(ev["stdout"].strip().splitlines()[-1])
    skipped = {_rel(s["file"], data): s["error"] for s in res["skipped_files"]}
    assert res["images"] == 3  # cat/0.png, dog/0.png, cat/outside.png
    assert skipped.pop("val/dog/outside.png") == f"same file as {val}/cat/outside.png"
    _check_reports(skipped, _expected_reports("val"))

    # crops: one image each, all refused in one line.
    for r, reason in zip(runs[4:], ["a character device", "a character device", "a FIFO", "file too large",
                                    "dangling symbolic link"]):
        assert r["rc"] == 2 and r["stderr"].count("\n") == 1 and reason in r["stderr"], r["stderr"]
    assert not (hostile["root"] / "sheet.png").exists()


def _train_expectations(res: dict, data: Path) -> None:
    assert res["train_images_per_epoch"] == 7  # 3 + 3 own images and the outside file once
    assert res["eval_images"] == 3
    skipped = {_rel(s["file"], data): s["error"] for s in res["skipped_files"]}
    expected = {**_expected_reports("train"), **_expected_reports("val")}
    expected["train/dog/outside.png"] = f"same file as {data}/train/cat/outside.png"
    expected["val/dog/outside.png"] = f"same file as {data}/val/cat/outside.png"
    _check_reports(skipped, expected)


TRAIN_FLAGS = ["--epochs", "1", "--batch-size", "4", "--input-size", "64", "--json"]


def _clean_copy(data: Path, to: Path) -> Path:
    """The same images without the hostile entries: the reference run."""
    for src in data.rglob("*.png"):
        if src.is_file() and not src.is_symlink() and "loop" not in src.parts:
            dst = to / src.relative_to(data)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    return to


def test_train_on_hostile_files_with_dataloader_workers(hostile):
    """A training run of this torch build peaks near 1 GiB on any folder (``import torch`` alone holds 560 MiB),
    so the hostile run is held against a clean run: it must not raise the peak. Each runs first in a process of its
    own: a second run in the same process added 35-76 MiB of its own (one CI run failed the 64 MiB bound on that);
    run apart, the two differ by 16-25 MiB."""
    clean = _clean_copy(hostile["data"], hostile["root"] / "clean")
    flags = [*TRAIN_FLAGS, "--workers", "2"]
    (ref,) = probe([["train", "--data", clean, *flags, "--out", hostile["root"] / "run_clean"]], timeout=300)
    (r,) = probe([["train", "--data", hostile["data"], *flags, "--out", hostile["root"] / "run"]], timeout=300)
    assert ref["rc"] == 0 and r["rc"] == 0 and "Traceback" not in r["stderr"], r["stderr"][-3000:]
    # By cause, not by a stopwatch: the hostile run reads what the clean one reads, plus the one outside file
    # (measured: 24.2 MiB clean, 25.2 MiB hostile; one device read to the 512 MiB limit would add 512), and its time
    # stays of the clean run's order.
    assert r["read_bytes"] - ref["read_bytes"] < 8 * 2**20, (ref["read_bytes"], r["read_bytes"])
    assert r["seconds"] < 2 * ref["seconds"] + 10, (ref["seconds"], r["seconds"])
    assert r["peak_kib"] - ref["peak_kib"] < 64 * 1024, (ref["peak_kib"], r["peak_kib"])
    assert r["workers_peak_kib"] < 1.5 * GIB_KIB and r["peak_kib"] < 1.5 * GIB_KIB
    _train_expectations(json.loads(r["stdout"].strip().splitlines()[-1]), hostile["data"])


_TORCHRUN = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
done = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True, timeout=240)
print(done.stderr[-3000:], file=sys.stderr)
print(json.dumps({"rc": done.returncode, "stdout": done.stdout, "seconds": time.perf_counter() - t0,
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_train_on_hostile_files_under_torchrun(hostile):
    """Two ranks apply the same rules (each rank's DataLoader reads through the same reader) and report the same
    skipped files as one process."""
    out = hostile["root"] / "run_ddp"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "googlenet",
            "train", "--data", str(hostile["data"]), *TRAIN_FLAGS, "--workers", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _TORCHRUN, json.dumps(argv)], capture_output=True, text=True,
                          timeout=300, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, done.stderr
    print(f"torchrun: {result['seconds']:.1f} s, peak of a rank {result['peak_kib'] / 1024:.0f} MiB")
    assert result["peak_kib"] < 1.5 * GIB_KIB, f"peak memory of one rank {result['peak_kib'] / 1024:.0f} MiB"
    res = json.loads(result["stdout"].strip().splitlines()[-1])
    assert res["world_size"] == 2
    _train_expectations(res, hostile["data"])
