"""R-CNN's per-class linear SVMs on region features, trained with hard-negative mining.

R-CNN (Girshick et al. 2014, section 2.3 and its code rcnn_train.m): for each class, positives are the ground-truth
boxes, negatives the proposals with IoU < 0.3 to every box of that class (those in 0.3..0.5 of IoU are ignored);
liblinear's L2-regularised L2-loss (squared hinge) SVM, C = 0.001, positive weight 2, bias multiplier 10; features
scaled so that their mean norm is 20; hard-negative mining: start from a first batch of negatives, then keep adding
every negative the current model scores above -1 (inside the margin), drop the easy ones (below -1.2), retrain.

No maintained library ships a GPU/CPU-batched primal squared-hinge SVM with R-CNN's weighting (scikit-learn's
LinearSVC is not installed here and is single-threaded liblinear), so the primal objective is minimised here with
torch's L-BFGS: it is smooth (squared hinge) and convex, so L-BFGS reaches liblinear's optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

C = 1e-3
POS_WEIGHT = 2.0
BIAS_MULT = 10.0
HARD = -1.0  # a negative scored above this is hard (inside the margin)
EASY = -1.2  # a cached negative scored below this is dropped
FEATURE_NORM = 20.0


@dataclass
class LinearSVMs:
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    feature_scale: float  # features are multiplied by this before scoring

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) SVM scores of (N, D) features."""
        return (features * self.feature_scale) @ self.weight.T + self.bias


def feature_scale(features: torch.Tensor) -> float:
    """R-CNN's scaling: the factor that makes the features' mean L2 norm 20."""
    return float(FEATURE_NORM / features.norm(dim=1).mean().clamp_min(1e-12))


def train_svm(pos: torch.Tensor, neg: torch.Tensor, *, c: float = C, pos_weight: float = POS_WEIGHT,
              iterations: int = 100) -> tuple[torch.Tensor, float]:
    """The primal L2-regularised squared-hinge SVM, as liblinear's -s 2 with R-CNN's -w1 2 and bias term (the bias
    is a feature of value BIAS_MULT, regularised like the weights, as liblinear does): (w (D,), b)."""
    x = torch.cat([pos, neg]).double()
    x = torch.cat([x, torch.full((len(x), 1), BIAS_MULT, dtype=x.dtype)], 1)
    y = torch.cat([torch.ones(len(pos)), -torch.ones(len(neg))]).double()
    cost = torch.cat([torch.full((len(pos),), c * pos_weight), torch.full((len(neg),), c)]).double()
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=iterations, tolerance_grad=1e-8, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        margin = (1 - y * (x @ w)).clamp_min(0)
        loss = 0.5 * (w * w).sum() + (cost * margin * margin).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = w.detach()
    return w[:-1].float(), float(w[-1] * BIAS_MULT)


def train_svms(pos_feats: list[torch.Tensor], neg_feats: list[torch.Tensor], *, rounds: int = 3,
               first_negatives: int = 2000, c: float = C) -> LinearSVMs:
    """One SVM per class. pos_feats[k]: (P_k, D) features of class k's ground-truth boxes; neg_feats[k]: (M_k, D)
    features of every proposal that is a negative for class k (IoU < 0.3 to its boxes). Round 0 trains on the first
    ``first_negatives`` negatives; each later round scores all negatives, adds the hard ones to the cache, drops the
    easy ones and retrains (R-CNN mines over the training images in the same way)."""
    every = torch.cat([f for f in pos_feats + neg_feats if len(f)])
    scale = feature_scale(every)
    weights, biases = [], []
    for pos, neg in zip(pos_feats, neg_feats):
        pos, neg = pos * scale, neg * scale
        if len(pos) == 0:  # a class absent from training: never fires
            weights.append(torch.zeros(every.shape[1]))
            biases.append(-1e3)
            continue
        cache = torch.arange(min(first_negatives, len(neg)))
        w, b = train_svm(pos, neg[cache], c=c)
        for _ in range(rounds - 1):
            hard = torch.nonzero(neg @ w + b > HARD).flatten()
            kept = cache[(neg[cache] @ w + b) >= EASY]
            new = torch.unique(torch.cat([kept, hard]))
            if torch.equal(new, cache):
                break
            cache = new
            w, b = train_svm(pos, neg[cache], c=c)
        weights.append(w)
        biases.append(b)
    return LinearSVMs(torch.stack(weights), torch.tensor(biases, dtype=torch.float32), scale)
