"""Table 1, computed: one row per row of the paper's table, every number measured on the built model.

Counting hooks on every Conv2d and Linear record multiply-adds (output elements x inputs per output) and the row
they belong to; weights and biases come from the parameters of the row's modules. The paper's printed values stand
beside them for comparison only. How to read them (SPEC section 1): params count weights only in K = 1024, ops count
multiply-adds in M = 10^6; a row "matches" when the computed value is within one printed unit of the printed
value (the paper's rounding is not consistent: 3a's 159.5K prints as 159, 4b's 438.0K as 437).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Optional

import torch
from torch import nn

from .models import create_model

# Table 1's branch widths of each inception module, in WIDTH_NAMES order
_INCEPTION_WIDTHS = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64), "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}
_PAPER = {  # Table 1 as printed: (params K, ops M)
    "conv1": (2.7, 34), "conv2": (112, 360), "inception_3a": (159, 128), "inception_3b": (380, 304),
    "inception_4a": (364, 73), "inception_4b": (437, 88), "inception_4c": (463, 100), "inception_4d": (580, 119),
    "inception_4e": (840, 170), "inception_5a": (1072, 54), "inception_5b": (1388, 71), "linear": (1000, 1),
}
WIDTH_NAMES = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")


def _rows(model: nn.Module) -> list[tuple[str, list[str], str]]:
    """(row name, module names, patch size/stride) in Table 1 order, read off the built model."""
    def pool(m: nn.Module) -> str:
        same = isinstance(m, nn.Sequential)  # TensorFlow SAME padding: a pad module, then the pool
        m = m[-1] if same else m
        return f"{m.kernel_size}x{m.kernel_size}/{m.stride}" + (" SAME" if same else "")

    k5 = model.inception3a.branch3[1].conv.kernel_size[0]
    conv1 = "7x7/2 SAME" if not isinstance(model.conv1.pad, nn.Identity) else "7x7/2"
    rows = [("conv1", ["conv1"], conv1), ("pool1", ["maxpool1", "lrn1"], pool(model.maxpool1)),
            ("conv2", ["conv2", "conv3"], "3x3/1"), ("pool2", ["lrn2", "maxpool2"], pool(model.maxpool2))]
    for stage, pool_name in (("3", "maxpool3"), ("4", "maxpool4"), ("5", None)):
        for tag in [t for t in _INCEPTION_WIDTHS if t[0] == stage]:
            rows.append((f"inception_{tag}", [f"inception{tag}"], f"1x1,3x3,{k5}x{k5}"))
        if pool_name:
            rows.append((f"pool{int(stage)}", [pool_name], pool(getattr(model, pool_name))))
    rows += [("avgpool", ["avgpool"], "global"), ("dropout", ["dropout"], f"p={model.dropout.p}"),
             ("linear", ["fc"], "")]
    if model.aux1 is not None:
        rows += [("aux1", ["aux1"], "aux on 4a"), ("aux2", ["aux2"], "aux on 4d")]
    return rows


@dataclass
class Row:
    name: str
    patch: str
    output: list[int] = field(default_factory=list)
    widths: Optional[dict] = None
    weights: int = 0
    biases: int = 0
    macs: int = 0
    paper_params: Optional[int] = None  # printed K x 1024
    paper_ops: Optional[int] = None  # printed M x 10^6
    paper_printed: Optional[str] = None
    params_match: Optional[bool] = None
    ops_match: Optional[bool] = None

    @property
    def flagged(self) -> bool:
        return self.params_match is False or self.ops_match is False


def summarize(arch: str = "googlenet", input_size: int = 224, num_classes: int = 1000,
              model: Optional[nn.Module] = None) -> dict:
    """The summary as a JSON-ready dict (see ``googlenet summary --json``)."""
    if model is None:
        model = create_model(arch, num_classes=num_classes, aux_logits=True)
    model = model.eval()
    spec = _rows(model)
    rows = {name: Row(name, patch) for name, _, patch in spec}
    owner = {m: name for name, modules, _ in spec for m in modules}

    hooks = []

    def count_macs(row: Row, mod: nn.Module, inp, out) -> None:
        if isinstance(mod, nn.Conv2d):
            row.macs += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * mod.weight[0, 0].numel()
        elif isinstance(mod, nn.Linear):
            row.macs += out.numel() // out.shape[0] * mod.in_features

    def record_output(row: Row, mod: nn.Module, inp, out) -> None:
        shape = list(out.shape[1:])
        row.output = shape + [1] * (3 - len(shape))  # C x H x W, a vector as C x 1 x 1 like Table 1

    for top_name, top in model.named_children():
        if top_name not in owner:
            continue
        row = rows[owner[top_name]]
        hooks.append(top.register_forward_hook(partial(record_output, row)))
        hooks += [mod.register_forward_hook(partial(count_macs, row)) for mod in top.modules()  # top itself included
                  if isinstance(mod, (nn.Conv2d, nn.Linear))]
        for pname, p in top.named_parameters():
            if pname.endswith("weight") and p.dim() > 1:  # conv / linear weights; BN affine counts as bias
                row.weights += p.numel()
            else:
                row.biases += p.numel()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size), with_aux=model.aux1 is not None)
    finally:
        for h in hooks:
            h.remove()

    for tag in _INCEPTION_WIDTHS:
        mod = getattr(model, f"inception{tag}")
        convs = (mod.branch1, mod.branch2[0], mod.branch2[1], mod.branch3[0], mod.branch3[1], mod.branch4[1])
        rows[f"inception_{tag}"].widths = dict(zip(WIDTH_NAMES, (c.conv.out_channels for c in convs)))
    rows["conv2"].widths = {"3x3_reduce": model.conv2.conv.out_channels, "3x3": model.conv3.conv.out_channels}
    for name, (k, m) in _PAPER.items():
        row = rows[name]
        row.paper_params, row.paper_ops = round(k * 1024), int(m * 1_000_000)
        row.paper_printed = f"{k:g}K / {m:g}M"
        row.params_match = abs(row.weights / 1024 - k) <= 1  # within one printed unit
        row.ops_match = abs(row.macs / 1e6 - m) <= 1

    main = [r for r in rows.values() if not r.name.startswith("aux")]
    aux = [r for r in rows.values() if r.name.startswith("aux")]
    total = {"params": sum(r.weights + r.biases for r in main), "weights": sum(r.weights for r in main),
             "macs": sum(r.macs for r in main)}
    total["params_with_aux"] = total["params"] + sum(r.weights + r.biases for r in aux)
    total["macs_with_aux"] = total["macs"] + sum(r.macs for r in aux)
    return {"arch": getattr(model, "arch_name", arch), "input_size": input_size, "num_classes": model.num_classes,
            "rows": [_row_json(r) for r in rows.values()], "total": total,
            "conv_and_linear_layers": sum(1 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))),
            "flagged": [r.name for r in rows.values() if r.flagged], "departures": departures(model, rows)}


PAPER_LRN = (5, 1e-4, 0.75, 1.0)  # Caffe's, which the paper's Figure 3 implies (SPEC section 1)


def departures(model: nn.Module, rows: dict) -> list[str]:
    """Where the built network departs from Table 1 / Figure 3 (widths, padding, LRN), as sentences."""
    out = []
    for tag, widths in _INCEPTION_WIDTHS.items():
        got = rows[f"inception_{tag}"].widths
        for name, want in zip(WIDTH_NAMES, widths):
            if got[name] != want:
                out.append(f"inception_{tag} {name}: {got[name]} filters, Table 1 has {want}")
    cfg = getattr(model, "cfg", None)
    if cfg is not None and cfg.padding == "same":
        out.append("TensorFlow SAME padding on conv1 and the stride-2 max pools (asymmetric: conv1 pads 2 before "
                   "and 3 after at 224), where Caffe pads symmetrically and rounds the pools up")
    if cfg is not None and cfg.norm == "lrn" and tuple(cfg.lrn) != PAPER_LRN:
        out.append(f"LRN size {cfg.lrn[0]}, alpha {cfg.lrn[1]:g}, beta {cfg.lrn[2]:g}, k {cfg.lrn[3]:g}; Caffe's "
                   f"is size 5, alpha 1e-4, beta 0.75, k 1")
    if model.num_classes != 1000:
        out.append(f"{model.num_classes} classes, Table 1 has 1000")
    return out


def _row_json(r: Row) -> dict:
    return {"name": r.name, "patch": r.patch, "output": r.output, "widths": r.widths, "weights": r.weights,
            "biases": r.biases, "params": r.weights + r.biases, "macs": r.macs, "paper_params": r.paper_params,
            "paper_ops": r.paper_ops, "paper_printed": r.paper_printed, "params_match": r.params_match,
            "ops_match": r.ops_match, "flagged": r.flagged}


def format_table(summary: dict) -> str:
    """The summary as a text table, Table 1's columns plus the computed and printed counts."""
    head = (f"{'row':<13} {'patch':<12} {'output':<13} {'#1x1':>5} {'#3r':>4} {'#3x3':>5} {'#5r':>4} {'#5x5':>5} "
            f"{'pool':>5} {'weights':>10} {'biases':>7} {'MACs':>13}  {'paper':<13} flag")
    lines = [f"{summary['arch']}  input {summary['input_size']}x{summary['input_size']}  "
             f"classes {summary['num_classes']}", head, "-" * len(head)]
    for r in summary["rows"]:
        if r["name"] == "aux1":
            lines.append("-- auxiliary heads (training only) --")
        cols = [(r["widths"] or {}).get(k, "") for k in WIDTH_NAMES]
        out = "x".join(str(d) for d in (r["output"][1:] + r["output"][:1])) if r["output"] else ""
        flag = ""
        if r["paper_printed"]:
            flag = "ok" if not r["flagged"] else "DIFFERS (" + ", ".join(
                k for k, ok in (("params", r["params_match"]), ("ops", r["ops_match"])) if not ok) + ")"
        lines.append(f"{r['name']:<13} {r['patch']:<12} {out:<13} {cols[0]!s:>5} {cols[1]!s:>4} {cols[2]!s:>5} "
                     f"{cols[3]!s:>4} {cols[4]!s:>5} {cols[5]!s:>5} {r['weights']:>10,} {r['biases']:>7,} "
                     f"{r['macs']:>13,}  {r['paper_printed'] or '':<13} {flag}")
    t = summary["total"]
    lines += ["-" * len(head),
              f"total (inference, no aux): {t['params']:,} params ({t['weights']:,} weights), "
              f"{t['macs']:,} multiply-adds ({t['macs'] / 1e9:.2f} G)",
              f"total with aux heads:      {t['params_with_aux']:,} params, {t['macs_with_aux']:,} multiply-adds",
              f"conv + linear layers: {summary['conv_and_linear_layers']}; rows that differ from the paper's "
              f"printed values: {', '.join(summary['flagged']) or 'none'} (paper params: weights in K=1024; "
              f"ops: multiply-adds in M=10^6)"]
    if summary.get("departures"):
        lines += ["departs from Table 1 / Figure 3:"] + [f"  - {d}" for d in summary["departures"]]
    return "\n".join(lines)
