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
    m = create_model("googlenet", num_classes=5)
    finetune.freeze(m, mode)
    cfg = resolve("finetune", None, {"freeze": mode})
    m.train(); finetune.keep_frozen_in_eval(m)
    steps[mode] = TrainStep(m, make_optimizer(cfg, m, 1e-4))
    steps[mode](x, y)  # warm-up
t = {k: 0.0 for k in steps}
for _ in range(4):
    for k, s in steps.items():
        t0 = time.perf_counter(); s(x, y); t[k] += time.perf_counter() - t0
print({k: round(v / 4, 3) for k, v in t.items()}, "ratio", round(t["none"] / t["trunk"], 2))
