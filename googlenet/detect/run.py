"""The one path by which the CLI and the benchmarks load detectors, read detection data and run a detector over
a set (``run_detector``, from report): ``detect eval``, ``detect train``, ``detect propose`` and ``bench detect``
share it."""

from __future__ import annotations


def load_detectors(weights: list[str]):
    """The detector of one file, or the ensemble of several (R-CNN files only)."""
    import importlib

    from ..errors import UserError

    try:
        # import_module, not "from ..detect import detector": it goes through sys.modules, so a build (or a test)
        # without the module gets the one line below.
        module = importlib.import_module("googlenet.detect.detector")
    except ModuleNotFoundError as e:
        if e.name == "googlenet.detect.detector":
            raise UserError("--weights needs googlenet.detect.detector, which this build lacks; score results "
                            "files with --detections") from None
        raise
    if len(weights) == 1:
        return module.load_detector(weights[0])
    load_ensemble = getattr(module, "load_ensemble", None)
    if load_ensemble is None:
        raise UserError("this build's detector cannot ensemble several --weights")
    return load_ensemble(weights)


def read_data(data, split, images, classes):
    """read_detection_set, its warnings about skipped objects printed as one line each on stderr."""
    import sys
    import warnings

    from .data import DataWarning, read_detection_set

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        dset = read_detection_set(data, split, images, classes)
    for w in caught:
        if issubclass(w.category, DataWarning):
            print(f"googlenet detect: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return dset


def run_detector(detector, dset):
    """Detections of one detector (or ensemble) for every image as arrays, and the mean seconds per image split into
    the detector's parts (proposals / features / scoring where it keeps ``last_timings``)."""
    from .report import run_detector as run_scorings

    dets, timings = run_scorings(detector, dset)
    return dets[None], timings
