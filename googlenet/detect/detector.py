"""Detectors as users call them: ``load_detector(path).detect(rgb) -> boxes, labels, scores``, ensembles, and the
R-CNN detector (proposals -> warped regions -> GoogLeNet features -> SVM or softmax scores -> per-class NMS).

``load_detector`` reads the kind a detector file holds ("rcnn" or "faster-rcnn") and builds it; ``load_ensemble``
averages several R-CNN classifiers' scores on the same proposals (the paper's ensemble of 6 classifiers: 40% ->
43.9% mAP on ILSVRC 2014 DET, Table 5).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .data import check_rgb
from .fileformat import read_detector_file, save_detector_file
from .recipe import DetectRecipe, recipe_from_dict
from .svm import LinearSVMs


class RegionDetector:
    """What R-CNN and its ensembles share: proposals, then class scores of their regions (``region_scores``), then
    per-class NMS under the scoring's threshold. A subclass gives ``proposals``, ``region_scores`` and ``recipe``."""

    def threshold(self, scoring: Optional[str] = None) -> float:
        return self.recipe.score_threshold if (scoring or self.recipe.scoring) == "svm" else 1e-3

    def detect(self, rgb: np.ndarray, scoring: Optional[str] = None):
        """(boxes (K, 4) float32 xyxy 0-based, labels (K,) int64, scores (K,) float32) for one RGB uint8 image."""
        return self.detect_each(rgb, [scoring])[scoring]

    __call__ = detect

    def detect_each(self, rgb: np.ndarray, scorings: Sequence[Optional[str]]) -> dict:
        """{scoring: detect(rgb, scoring)}, the proposals and region features computed once for all ``scorings``."""
        from .rcnn import select_detections

        rgb = check_rgb(rgb)
        t0 = time.perf_counter()
        boxes = self.proposals(rgb)
        t1 = time.perf_counter()
        scores = self.region_scores(rgb, boxes, scorings)
        t2 = time.perf_counter()
        out = {s: select_detections(boxes, scores[s], self.recipe, self.threshold(s)) for s in scorings}
        self.last_timings = {"proposals": t1 - t0, "features": t2 - t1, "scoring": time.perf_counter() - t2}
        return out


class RCNNDetector(RegionDetector):
    """A fine-tuned GoogLeNet region classifier, its per-class SVMs and the recipe that made them."""

    kind = "rcnn"

    def __init__(self, model: nn.Module, classes: Sequence[str], preprocessing: dict, recipe: DetectRecipe,
                 svms: Optional[LinearSVMs] = None, multibox=None, extra: Optional[dict] = None) -> None:
        self.model = model.eval()
        self.classes = list(classes)
        self.preprocessing = dict(preprocessing)
        self.recipe = recipe
        self.svms = svms
        self.multibox = multibox
        self.extra = dict(extra or {})
        self.last_timings: dict[str, float] = {}

    # --- proposals, scores, detections ---------------------------------------------------------------------------
    def proposals(self, rgb: np.ndarray, count: Optional[int] = None) -> np.ndarray:
        from .proposals import propose

        return propose(rgb, self.recipe.proposals, count or self.recipe.test_proposals, self.multibox)

    def region_scores(self, rgb: np.ndarray, boxes: np.ndarray, scorings: Sequence[Optional[str]]) -> dict:
        """{scoring: (N, C) class scores} of the regions ``boxes`` of ``rgb``, their features computed once."""
        from .rcnn import class_scores, image_tensor, region_outputs

        feats, logits = region_outputs(self.model, image_tensor(rgb, self.preprocessing), boxes, self.recipe)
        return {s: class_scores(feats, logits, self.svms, s or self.recipe.scoring) for s in scorings}

    # --- the file ------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        from ..models import arch_options

        tensors = {f"classifier.{k}": v for k, v in self.model.state_dict().items()}
        meta = {"detector": self.kind, "classes": self.classes, "recipe": asdict(self.recipe),
                "arch": getattr(self.model, "arch_name", self.recipe.arch), "options": arch_options(self.model),
                "num_classes": int(self.model.num_classes), "aux_logits": self.model.aux1 is not None,
                "preprocessing": self.preprocessing, **self.extra}
        if self.svms is not None:
            tensors["svm.weight"], tensors["svm.bias"] = self.svms.weight, self.svms.bias
            meta["svm_feature_scale"] = self.svms.feature_scale
        if self.multibox is not None:
            tensors.update({f"multibox.{k}": v for k, v in self.multibox.state_dict().items()})
            meta["multibox"] = self.multibox.config()
        return save_detector_file(path, tensors, meta)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "RCNNDetector":
        from ..models import create_model, list_models
        from ..weights import check_preprocessing, load_state_dict_checked

        meta, tensors = read_detector_file(path, "rcnn")
        arch, n = meta.get("arch"), meta.get("num_classes")
        if arch not in list_models():
            raise UserError(f"{path}: unknown arch {arch!r}")
        if not isinstance(n, int) or n != len(meta["classes"]) + 1:
            raise UserError(f"{path}: {n!r} classifier outputs for {len(meta['classes'])} classes + background")
        recipe = recipe_from_dict(meta["recipe"], str(path))
        try:
            with torch.device("meta"):
                model = create_model(arch, num_classes=n, aux_logits=bool(meta.get("aux_logits")),
                                     **(meta.get("options") or {}))
        except (TypeError, ValueError) as e:
            raise UserError(f"{path}: invalid model options: {e}") from None
        state = {k[len("classifier."):]: v for k, v in tensors.items() if k.startswith("classifier.")}
        load_state_dict_checked(model, state, source=str(path), assign=True)
        svms = None
        if "svm.weight" in tensors:
            w, b = tensors["svm.weight"], tensors["svm.bias"]
            if w.shape != (len(meta["classes"]), 1024) or b.shape != (len(meta["classes"]),):
                raise UserError(f"{path}: SVM shapes {tuple(w.shape)} / {tuple(b.shape)} do not fit "
                                f"{len(meta['classes'])} classes")
            svms = LinearSVMs(w.float(), b.float(), float(meta.get("svm_feature_scale", 1.0)))
        elif recipe.scoring == "svm":
            raise UserError(f"{path}: the recipe scores with SVMs but the file has none")
        multibox = None
        if meta.get("multibox") is not None:
            from .multibox import MultiBox

            multibox = MultiBox.from_state(meta["multibox"], {k[len("multibox."):]: v for k, v in tensors.items()
                                                              if k.startswith("multibox.")}, str(path))
        pre = check_preprocessing(meta.get("preprocessing") or {}, str(path))
        extra = {k: meta[k] for k in ("training",) if k in meta}
        return cls(model, meta["classes"], pre, recipe, svms, multibox, extra)


class EnsembleDetector(RegionDetector):
    """Several R-CNN classifiers on the same proposals (the first member's), their class scores averaged, then one
    NMS: the paper's classifier ensemble. Members must agree on the classes and the scoring."""

    kind = "rcnn-ensemble"

    def __init__(self, members: Sequence[RCNNDetector]) -> None:
        if not members:
            raise ValueError("an ensemble needs members")
        first = members[0]
        for m in members[1:]:
            if m.classes != first.classes:
                raise UserError("ensemble members must have the same classes, in the same order")
            if m.recipe.scoring != first.recipe.scoring:
                raise UserError("ensemble members must score the same way (all svm or all softmax)")
        self.members = list(members)
        self.classes = first.classes
        self.recipe = first.recipe
        self.last_timings: dict[str, float] = {}

    def proposals(self, rgb: np.ndarray, count: Optional[int] = None) -> np.ndarray:
        return self.members[0].proposals(rgb, count)

    def region_scores(self, rgb: np.ndarray, boxes: np.ndarray, scorings: Sequence[Optional[str]]) -> dict:
        each = [m.region_scores(rgb, boxes, scorings) for m in self.members]
        return {s: torch.stack([e[s] for e in each]).mean(0) for s in scorings}


def load_detector(path: str | os.PathLike):
    """The detector a file holds, of whichever kind its metadata names."""
    meta, _ = read_detector_file(path)  # checks the file once for its kind; the loaders re-read their tensors
    if meta["detector"] == "faster-rcnn":
        try:
            from .faster_rcnn import FasterRCNNDetector
        except ModuleNotFoundError as e:
            raise UserError(f"{path} holds a Faster R-CNN detector, which this build cannot run ({e.name})") from None
        return FasterRCNNDetector.from_file(path)
    return RCNNDetector.from_file(path)


def load_ensemble(paths: Sequence[str | os.PathLike]):
    """One detector for one path; an EnsembleDetector of R-CNN files for several."""
    detectors = [load_detector(p) for p in paths]
    if len(detectors) == 1:
        return detectors[0]
    if not all(isinstance(d, RCNNDetector) for d in detectors):
        raise UserError("only R-CNN detectors ensemble (they share proposals); a Faster R-CNN file was given")
    return EnsembleDetector(detectors)


class Detector:
    """``googlenet.detect.Detector.load(W)(image) -> boxes, labels, scores``: one file or an ensemble of several;
    ``image`` is an (H, W, 3) uint8 RGB array, a PIL image or a path."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.classes = inner.classes

    @classmethod
    def load(cls, *paths: str | os.PathLike) -> "Detector":
        if len(paths) == 1 and isinstance(paths[0], (list, tuple)):
            paths = tuple(paths[0])
        return cls(load_ensemble(paths))

    def __call__(self, image):
        if isinstance(image, (str, os.PathLike)):
            from ..data.images import BadImage, load_image

            try:
                image = load_image(image).permute(1, 2, 0).numpy()
            except BadImage as e:
                raise UserError(f"image {image}: {e}") from None
        elif not isinstance(image, np.ndarray):
            image = np.asarray(image.convert("RGB"))
        return self.inner.detect(image)
