"""``googlenet bench detect``: detectors side by side on the same held-out images: VOC07 and COCO mAP, seconds an
image, the training wall time their files record, and the memory that scoring took.

Each contender is one detector file, or several joined by commas (an R-CNN ensemble: ``A,B,C``). Peak memory is
the growth of this process's resident high-water mark while that contender loads and scores (Linux: the mark is
reset through ``/proc/self/clear_refs`` before each one, so a contender after a bigger one is not hidden by it).
"""

from __future__ import annotations

import os
import resource
import time
from typing import Optional

from .common import proc_status_kib


def _reset_peak() -> Optional[int]:
    """The current RSS (KiB) after resetting the high-water mark to it; None where Linux's /proc is not there."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return proc_status_kib("VmRSS")


def bench_detect(contenders: list[str], data: str, split: str = "test", images: Optional[str] = None,
                 progress=None) -> tuple[list[dict], list[str]]:
    from ..detect.run import load_detectors, read_data, run_detector
    from ..detect.metrics import evaluate_detections
    from ..errors import UserError

    rows, dset = [], None
    for spec in contenders:
        paths = [p for p in spec.split(",") if p]
        if progress:
            progress(f"{spec}: loading and scoring")
        start = _reset_peak()
        detector = load_detectors(paths)
        if dset is None:
            dset = read_data(data, split, images, list(detector.classes))
        if list(detector.classes) != dset.classes:
            raise UserError(f"{spec}: its classes ({', '.join(detector.classes)}) are not the data's")
        t0 = time.perf_counter()
        dets, timings = run_detector(detector, dset)
        wall = time.perf_counter() - t0
        peak = proc_status_kib("VmHWM")
        metrics = evaluate_detections(dset, dets)
        trained = [(getattr(d, "extra", {}).get("training") or {}).get("wall_s")
                   for d in getattr(detector, "members", [detector])]
        kind = getattr(detector, "kind", type(detector).__name__)
        rows.append({"name": spec if len(paths) == 1 else f"ensemble of {len(paths)}: {spec}", "detector": kind,
                     "models": len(paths), "voc07_map": metrics.get("voc07_map"), "coco_map": metrics.get("coco_map"),
                     "coco_map50": metrics.get("coco_map50"), "seconds_per_image": round(timings["total"], 4),
                     "images_per_s": round(len(dset.images) / max(wall, 1e-9), 2),
                     "train_wall_s": None if None in trained else round(sum(trained), 1),
                     "peak_mib": None if start is None or peak is None else round((peak - start) / 1024, 1)})
        del detector
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    notes = [f"{len(dset.images)} held-out images of {data} ({split}); {os.cpu_count()} cores; "
             f"process peak {maxrss} MiB",
             "train_wall_s: as recorded in the detector files (an ensemble: the sum of its members')",
             "peak_mib: growth of the resident high-water mark while the contender loaded and scored"]
    return rows, notes


def format_detect_table(rows: list[dict], notes: list[str]) -> str:
    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = f"{'detector':<44} {'VOC07 mAP':>9} {'COCO mAP':>8} {'s/img':>7} {'img/s':>7} {'train s':>8} {'peak MiB':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name'][-44:]:<44} {cell(r['voc07_map'], '.4f'):>9} {cell(r['coco_map'], '.4f'):>8} "
                     f"{r['seconds_per_image']:>7.3f} {r['images_per_s']:>7.2f} {cell(r['train_wall_s'], '.0f'):>8} "
                     f"{cell(r['peak_mib'], '.0f'):>8}")
    return "\n".join(lines + [f"note: {n}" for n in notes])
