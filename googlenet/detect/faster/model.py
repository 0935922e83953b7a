"""torchvision's FasterRCNN on a GoogLeNet trunk, and the detector users call: ``FasterRCNNDetector.from_file(path)
.detect(rgb) -> boxes, labels, scores``, saved as the project's detector file (safetensors + JSON, no pickle)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from ...errors import UserError
from ..data import check_rgb
from .backbone import FPN_LAYERS, HEAD_CHANNELS, googlenet_backbone
from .recipe import FasterRecipe, recipe_from_dict

KIND = "faster-rcnn"
FPN_MAPS = 4  # "0", "1", "2" and LastLevelMaxPool's "pool"


def anchor_generator(recipe: FasterRecipe) -> AnchorGenerator:
    """One tuple of sizes per feature map, as AnchorGenerator requires: FPN shares the sizes out over its 4 maps in
    order (smallest on the finest); C4 puts all of them on its one map."""
    sizes = [int(s) if float(s).is_integer() else float(s) for s in recipe.anchor_sizes]
    if recipe.trunk == "fpn":
        k = len(sizes) // FPN_MAPS
        per_map = tuple(tuple(sizes[i * k:(i + 1) * k]) for i in range(FPN_MAPS))
    else:
        per_map = (tuple(sizes),)
    ratios = tuple(float(a) for a in recipe.aspect_ratios)
    return AnchorGenerator(sizes=per_map, aspect_ratios=(ratios,) * len(per_map))


def build_faster_rcnn(classifier: nn.Module, recipe: FasterRecipe, num_classes: int, *,
                      pretrained: bool) -> FasterRCNN:
    """A FasterRCNN for ``num_classes`` object classes (+ background) on ``classifier``'s trunk (its modules are
    taken over). pretrained: frozen BN and, by default, a frozen stem (torchvision's detection references); from
    scratch every stage trains and BN keeps its batch statistics."""
    trainable = recipe.trainable_layers if recipe.trainable_layers is not None else (3 if pretrained else 4)
    backbone, head = googlenet_backbone(classifier, recipe.trunk, trainable_layers=trainable,
                                        frozen_bn=pretrained, fpn_channels=recipe.fpn_channels)
    if recipe.trunk == "c4":
        # 14 x 14 RoIs at stride 16; the head's maxpool4 halves them to the 7 x 7 that inception5a/5b saw in training.
        roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=14,
                                      sampling_ratio=recipe.roi_sampling_ratio)
        box_head, head_width = head, HEAD_CHANNELS
    else:
        roi_pool = MultiScaleRoIAlign(featmap_names=sorted(FPN_LAYERS.values()), output_size=7,
                                      sampling_ratio=recipe.roi_sampling_ratio)
        box_head = TwoMLPHead(recipe.fpn_channels * 7 * 7, recipe.representation_size)
        head_width = recipe.representation_size
    return FasterRCNN(
        backbone, num_classes=None, min_size=recipe.min_size, max_size=recipe.max_size,
        # The identity: the trunk's own preprocessing runs inside the backbone (backbone.Preprocess) on RGB 0..1.
        image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=anchor_generator(recipe),
        rpn_pre_nms_top_n_train=recipe.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=recipe.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=recipe.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=recipe.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=recipe.rpn_batch_size_per_image,
        box_roi_pool=roi_pool, box_head=box_head, box_predictor=FastRCNNPredictor(head_width, num_classes + 1),
        box_score_thresh=recipe.box_score_thresh, box_nms_thresh=recipe.box_nms_thresh,
        box_detections_per_img=recipe.detections_per_img, box_batch_size_per_image=recipe.box_batch_size_per_image)


class FasterRCNNDetector:
    """A trained Faster R-CNN and what made it: classes (without background), the recipe, the trunk's arch and
    preprocessing. ``detect`` takes RGB uint8 H x W x 3 and returns xyxy 0-based float32 boxes, int64 labels
    (indices into ``classes``) and float32 scores, best first."""

    kind = KIND

    def __init__(self, model: FasterRCNN, classes: Sequence[str], recipe: FasterRecipe, trunk_meta: dict,
                 extra: Optional[dict] = None) -> None:
        # channels_last, as the R-CNN's region classifier runs: oneDNN's convolutions and pools take it faster
        # (a 192 x 256 scene: 71 ms NCHW, 54 ms channels_last on this 2-core CPU, 2026-12-07). The file is the same
        # (save writes contiguous tensors).
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.classes = list(classes)
        self.recipe = recipe
        self.trunk_meta = dict(trunk_meta)  # arch, options, preprocessing of the GoogLeNet trunk
        self.extra = dict(extra or {})
        self.last_timings: dict[str, float] = {}

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray):
        rgb = check_rgb(rgb)
        t0 = time.perf_counter()
        device = next(self.model.parameters()).device
        x = torch.from_numpy(rgb).to(device).permute(2, 0, 1).float().div_(255)
        out = self.model([x])[0]
        boxes = out["boxes"].float().cpu().numpy().astype(np.float32)
        labels = (out["labels"].cpu().numpy() - 1).astype(np.int64)  # torchvision's 0 is the background
        scores = out["scores"].float().cpu().numpy().astype(np.float32)
        self.last_timings = {"network": time.perf_counter() - t0}
        return boxes, labels, scores

    __call__ = detect

    def save(self, path: str | os.PathLike) -> Path:
        from ..fileformat import save_detector_file

        meta = {"detector": KIND, "classes": self.classes, "recipe": asdict(self.recipe), "trunk": self.recipe.trunk,
                **self.trunk_meta, **self.extra}
        return save_detector_file(path, self.model.state_dict(), meta)

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "FasterRCNNDetector":
        """The detector a file holds; a file of another kind (the paper's R-CNN) is refused in one line."""
        from ...models import create_model, list_models
        from ...weights import check_preprocessing, load_state_dict_checked
        from ..fileformat import read_detector_file

        meta, tensors = read_detector_file(path, KIND)
        recipe = recipe_from_dict(meta["recipe"], str(path))
        arch = meta.get("arch")
        if arch not in list_models():
            raise UserError(f"{path}: unknown trunk arch {arch!r}")
        if not isinstance(meta.get("options") or {}, dict):
            raise UserError(f"{path}: options must be a JSON object")
        pre = check_preprocessing(meta.get("preprocessing") or {}, str(path))
        try:
            classifier = create_model(arch, num_classes=1, aux_logits=False, **(meta.get("options") or {}))
        except (TypeError, ValueError) as e:
            raise UserError(f"{path}: invalid trunk options: {e}") from None
        classifier.preprocessing = pre
        model = build_faster_rcnn(classifier, recipe, len(meta["classes"]), pretrained=bool(meta.get("frozen_bn")))
        load_state_dict_checked(model, tensors, source=str(path))
        trunk_meta = {"arch": arch, "options": meta.get("options") or {}, "preprocessing": pre,
                      "frozen_bn": bool(meta.get("frozen_bn"))}
        extra = {k: meta[k] for k in ("training",) if k in meta}
        return cls(model.to(device), meta["classes"], recipe, trunk_meta, extra)
