"""Linear probe (--freeze trunk) against full fine-tuning: seconds per training step of the paper's googlenet,
batch 32 at 64x64, the two alternated in one process (docs/finetuning.md)."""
import time, torch
from googlenet import finetune
from googlenet.models import create_model
from googlenet.train.config import resolve
from googlenet.train.loop import make_optimizer
from googlenet.train.step import TrainStep
torch.set_num_threads(2)
x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 5, (32,))
steps = {}
for mode in ("none", "trunk"):
    m = create_model("googlenet", num_classes=5, aux_logits=True)
    finetune.freeze(m, mode)
    cfg = resolve("finetune", None, {"freeze": mode})
    if cfg.channels_last:
        m = m.to(memory_format=torch.channels_last)
    m.train(); finetune.keep_frozen_in_eval(m)
    # As train/loop.py builds it (the recipe's layout, fp32), and a linear probe (trunk) does not run the aux heads.
    steps[mode] = TrainStep(m, make_optimizer(cfg, m, 1e-4), channels_last=cfg.channels_last,
                            aux_weight=0.0 if mode == "trunk" else cfg.aux_weight)
    steps[mode](x, y)  # warm-up
t = {k: 0.0 for k in steps}
for _ in range(8):
    for k, s in steps.items():
        t0 = time.perf_counter(); s(x, y); t[k] += time.perf_counter() - t0
print({k: round(v / 8, 3) for k, v in t.items()}, "ratio", round(t["none"] / t["trunk"], 2))
