"""MultiBox (Erhan, Szegedy, Toshev and Anguelov 2014): K class-agnostic boxes an image, each 4 coordinates and a
confidence, from a GoogLeNet; the paper adds 200 of them to selective search's proposals for recall.

- Each prediction is a residual on a prior box; the priors are the k-means centres of the training boxes
  (normalised xyxy coordinates), so an untrained head already proposes typical boxes.
- Training assigns predictions to ground-truth boxes by bipartite matching (the Hungarian method,
  ``scipy.optimize.linear_sum_assignment``) on the loss itself, then minimises
  F = alpha/2 * sum_matched ||l_i - g_j||^2 - sum_matched log c_i - sum_unmatched log(1 - c_i).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import UserError

ALPHA = 0.3  # Erhan et al.'s weight of the location term


def kmeans_priors(boxes: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(k, 4) prior boxes: k-means centres of the normalised (N, 4) training boxes (fewer boxes than k: all of
    them, the rest repeated)."""
    from scipy.cluster.vq import kmeans2

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise UserError("MultiBox needs training boxes for its priors")
    if len(boxes) <= k:
        return boxes[np.arange(k) % len(boxes)].astype(np.float32)
    centres, _ = kmeans2(boxes, k, minit="++", seed=seed)
    return centres.astype(np.float32)


def match(pred: torch.Tensor, logit: torch.Tensor, gt: torch.Tensor, alpha: float = ALPHA):
    """The bipartite matching of the K predictions (K, 4) to the G ground-truth boxes (G, 4) that minimises the
    MultiBox loss: cost(i, j) = alpha/2 ||l_i - g_j||^2 - log c_i + log(1 - c_i). Returns (pred idx, gt idx)."""
    from scipy.optimize import linear_sum_assignment

    with torch.no_grad():
        loc = 0.5 * alpha * torch.cdist(pred.double(), gt.double()) ** 2
        conf = (nn.functional.softplus(-logit) - nn.functional.softplus(logit)).double()  # -log c + log(1 - c)
        rows, cols = linear_sum_assignment((loc + conf[:, None]).numpy())
    return torch.from_numpy(rows), torch.from_numpy(cols)


def multibox_loss(pred: torch.Tensor, logit: torch.Tensor, gt: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """Erhan et al.'s F for one image: pred (K, 4) boxes, logit (K,) confidence logits, gt (G, 4)."""
    matched = torch.zeros(len(pred), dtype=torch.bool)
    loss = pred.new_zeros(())
    if len(gt):
        i, j = match(pred, logit, gt, alpha)
        matched[i] = True
        loss = loss + 0.5 * alpha * ((pred[i] - gt[j]) ** 2).sum()
    # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
    return loss + nn.functional.softplus(-logit[matched]).sum() + nn.functional.softplus(logit[~matched]).sum()


class MultiBox(nn.Module):
    """A GoogLeNet trunk, its last 1024-channel map pooled to a grid x grid -> K x (4 residuals + 1 confidence
    logit). Erhan et al.'s head is a fully connected layer on AlexNet's spatial map; GoogLeNet's global average
    pool keeps no position for it to regress from. (The measured gain came from the optimiser, train_multibox: with
    AdamW the grid head scored below the pooled one, docs/detection.md.)"""

    def __init__(self, priors: np.ndarray, arch: str = "googlenet", input_size: int = 160, grid: int = 3) -> None:
        super().__init__()
        from ..models import create_model
        from ..weights import default_preprocessing

        self.arch, self.input_size, self.grid = arch, int(input_size), int(grid)
        self.trunk = create_model(arch, num_classes=1, aux_logits=False)
        self.trunk.fc = nn.Identity()
        self.trunk.avgpool = nn.AdaptiveAvgPool2d(self.grid)  # forward_features flattens it: 1024 * grid^2
        self.register_buffer("priors", torch.as_tensor(priors, dtype=torch.float32).reshape(-1, 4))
        self.head = nn.Linear(1024 * self.grid ** 2, 5 * len(self.priors))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.preprocessing = default_preprocessing(self.input_size)

    @property
    def k(self) -> int:
        return len(self.priors)

    def config(self) -> dict:
        return {"arch": self.arch, "input_size": self.input_size, "k": self.k, "grid": self.grid}

    @classmethod
    def from_state(cls, config: dict, state: dict, source: str) -> "MultiBox":
        from ..weights import load_state_dict_checked

        try:
            k, arch, size = int(config["k"]), str(config["arch"]), int(config["input_size"])
            grid = int(config.get("grid", 1))  # files written before the grid head pooled globally
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"{source}: bad MultiBox settings {config!r}") from None
        if not 1 <= k <= 10000 or not 64 <= size <= 2048 or not 1 <= grid <= 16:
            raise UserError(f"{source}: bad MultiBox settings {config!r}")
        try:
            with torch.device("meta"):
                mb = cls(np.zeros((k, 4), np.float32), arch, size, grid)
        except (TypeError, ValueError) as e:
            raise UserError(f"{source}: bad MultiBox arch: {e}") from None
        load_state_dict_checked(mb, state, source=source, assign=True)
        return mb.eval()

    def inputs(self, rgb: np.ndarray) -> torch.Tensor:
        """The image resized (anisotropically) to the input square, under the trunk's preprocessing: (3, S, S)."""
        from ..data.transforms import model_input

        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                      align_corners=False, antialias=True)
        return model_input(x, self.preprocessing)[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, S, S) -> boxes (B, K, 4) normalised xyxy, confidence logits (B, K)."""
        out = self.head(self.trunk.forward_features(x).logits).view(len(x), self.k, 5)
        return self.priors + out[..., :4], out[..., 4]

    @torch.inference_mode()
    def propose(self, rgb: np.ndarray) -> np.ndarray:
        """(K, 4) float32 boxes in pixels, most confident first, clipped to the image; degenerate ones dropped."""
        self.eval()
        boxes, logits = self(self.inputs(rgb)[None])
        h, w = rgb.shape[:2]
        order = torch.argsort(logits[0], descending=True)
        b = boxes[0][order] * torch.tensor([w, h, w, h], dtype=torch.float32)
        x, y = b[:, [0, 2]].clamp(0, w), b[:, [1, 3]].clamp(0, h)
        b = torch.stack([x.min(1).values, y.min(1).values, x.max(1).values, y.max(1).values], 1)
        keep = ((b[:, 2] - b[:, 0]) >= 2) & ((b[:, 3] - b[:, 1]) >= 2)
        return b[keep].numpy().astype(np.float32)


def normalised_boxes(img) -> np.ndarray:
    return (img.boxes / np.array([img.width, img.height, img.width, img.height], np.float32)).astype(np.float32)


def train_multibox(dset, recipe, log: Callable[[str], None] = print, batch: int = 16) -> MultiBox:
    """MultiBox trained on ``dset``'s boxes with SGD for recipe.multibox_iterations batches (random flips)."""
    from .data import load_rgb

    t0 = time.perf_counter()
    gts = [normalised_boxes(img) for img in dset.images]
    torch.manual_seed(recipe.seed)
    mb = MultiBox(kmeans_priors(np.concatenate(gts), recipe.multibox_k, recipe.seed), recipe.arch,
                  recipe.multibox_input, recipe.multibox_grid)
    xs = torch.stack([mb.inputs(load_rgb(img)) for img in dset.images])
    # SGD, not Adam: a prior is matched in few images, and Adam's normalised steps keep moving its output rows by
    # about lr x fan-in between matches, so the boxes left the frame for good (recall@0.5 on the scenes: AdamW 0.07,
    # SGD 0.54, 64 boxes, 300 steps; docs/detection.md).
    opt = torch.optim.SGD(mb.parameters(), lr=recipe.multibox_lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    rng = np.random.default_rng(recipe.seed)
    mb.train()
    losses = []
    for step in range(recipe.multibox_iterations):
        idx = rng.choice(len(xs), min(batch, len(xs)), replace=False)
        x = xs[torch.from_numpy(idx)]
        flip = rng.random(len(idx)) < 0.5
        x[torch.from_numpy(flip)] = x[torch.from_numpy(flip)].flip(-1)
        boxes, logits = mb(x)
        loss = 0
        for b, (i, f) in enumerate(zip(idx, flip)):
            g = torch.from_numpy(gts[i])
            if f:  # mirrored image, mirrored boxes: x -> 1 - x
                g = torch.stack([1 - g[:, 2], g[:, 1], 1 - g[:, 0], g[:, 3]], 1)
            loss = loss + multibox_loss(boxes[b], logits[b], g)
        loss = loss / len(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    mb.eval()
    if losses:
        log(f"MultiBox (K={mb.k}) trained {len(losses)} steps: loss {np.mean(losses[:10]):.3f} -> "
            f"{np.mean(losses[-10:]):.3f} in {time.perf_counter() - t0:.0f} s")
    return mb
