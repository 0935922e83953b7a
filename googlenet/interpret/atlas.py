"""A layer atlas: for each channel of a layer, its feature visualisation beside the dataset images that excite it
most, as one static HTML page (like OpenAI Microscope's pages for InceptionV1, but offline and for any weights).

Two passes make an atlas:

1. One batched pass over the data with a forward hook on the layer (``LayerCapture``, stopping there): the mean
   activation of every chosen channel on every image (N x K). The images go through the same crop and
   preprocessing as ``eval`` and ``predict`` (``CropDataset`` with the centre-crop view, ``model_input``), so
   grey, BGR and 0..255 weights see what they were trained on. The top-k images of a channel are the k largest
   values of its column.
2. ``visualize`` (Lucid's method) makes one image per channel, all channels in one optimisation batch.

``build_atlas`` returns tensors (a notebook needs no HTML); ``write_atlas`` writes ``index.html`` and its PNGs.
"""

from __future__ import annotations

import html
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..fileio import atomic_write_text, ensure_dir, printable
from ..weights import default_preprocessing
from .common import LayerCapture, resolve_layer, save_png

DEFAULT_CHANNELS = 16  # the first 16 channels: minutes on a CPU (docs/interpret.md)
DEFAULT_TOP = 9  # a 3 x 3 block of images per channel, as Microscope shows
VIS_BATCH = 16  # channels visualised together (one optimisation batch)
EMBEDDED = "embedded"  # --data embedded: the bundled Fashion-MNIST held-out part (2,000 images)


@dataclass
class DataSource:
    """Images to rank: ``dataset[i]`` is ``(3 x H x W uint8, label)`` or a ``Skipped``; ``names[i]`` and
    ``labels[i]`` are what the page says about image i (a file name relative to the folder, a class name)."""

    dataset: Dataset
    names: list[str]
    labels: list[str]
    description: str


@dataclass
class Atlas:
    layer: str
    layer_channels: int  # how many channels the layer has (the atlas shows ``channels`` of them)
    channels: list[int]
    visualizations: Tensor  # K x 3 x S x S pixels in 0..1, one per channel
    activations: Tensor  # N_read x K: mean activation of each channel on each image read
    scanned: list[int]  # N_read dataset indices, the rows of ``activations``
    top_values: Tensor  # K x top, each row sorted from the highest
    top_items: Tensor  # K x top dataset indices
    preprocessing: dict  # the weights' (with a --grayscale override): how the images were cut and normalised
    skipped: list = field(default_factory=list)  # Skipped files (unreadable), with their reason


def open_source(data: str, limit: Optional[int] = None) -> DataSource:
    """``embedded`` (or a name in ``googlenet.data.embedded.NAMES``): the held-out Fashion-MNIST; otherwise a folder,
    walked recursively by the project's safe scan (each file once, no cycles; see docs/safe-files.md). ``limit``:
    that many images spread evenly over the data (``eval``'s choice)."""
    from ..data import embedded
    from ..data.folder import ImageFolderDataset, Sample
    from ..data.scan import scan_folder
    from ..evaluate.ensemble import ArrayImages
    from ..evaluate.evaluate import spread

    if data == EMBEDDED or data in embedded.NAMES:
        _, held = embedded.load_fashion("fashion-mnist-subset" if data == EMBEDDED else data)
        idx = torch.tensor(spread(len(held), limit), dtype=torch.long)
        return DataSource(ArrayImages(held.images[idx], held.labels[idx]),
                          [f"held-out #{i}" for i in idx.tolist()],
                          [held.class_names[c] for c in held.labels[idx].tolist()],
                          f"{held.name} ({len(idx)} of {len(held)} images)")
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"--data: not a folder: {printable(root)} (or 'embedded' for the bundled held-out set)")
    files, left_out = scan_folder(root)
    if not files:
        why = f" ({len(left_out)} left out, e.g. {printable(left_out[0].path)}: {left_out[0].reason})" if left_out else ""
        raise UserError(f"no files found under {printable(root)}{why}")
    picked = [files[i] for i in spread(len(files), limit)]
    names = [printable(os.path.relpath(f, root)) for f in picked]
    # A file in a sub-folder (DIR/<class>/x.png, the ImageFolder layout) is labelled by that folder.
    labels = [n.split(os.sep)[0] if os.sep in n else "" for n in names]
    return DataSource(ImageFolderDataset([Sample(f, -1) for f in picked]), names, labels,
                      f"{printable(root)} ({len(picked)} of {len(files)} files)")


def parse_channels(spec: Optional[str], n: int) -> list[int]:
    """``None``: the first ``DEFAULT_CHANNELS``; ``"N"``: the first N; ``"all"``; ``"3,7,12"`` / ``"0-7,64-71"``:
    those channels, in the order given (a single channel: ``"12,"`` or ``"12-12"``)."""
    if spec is None:
        return list(range(min(DEFAULT_CHANNELS, n)))
    text = str(spec).strip()
    if text == "all":
        return list(range(n))
    if text.isdigit():
        count = int(text)
        if count < 1:
            raise UserError("--channels: a count must be at least 1")
        return list(range(min(count, n)))
    picked: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, dash, hi = part.partition("-")
            a, b = int(lo), int(hi) if dash else int(lo)
            if a > b:
                raise ValueError
            picked += [c for c in range(a, b + 1) if c not in picked]
    except ValueError:
        raise UserError(f"--channels {spec!r}: expected a count (16), 'all', or channels such as 3,7,12 or "
                        f"0-7") from None
    if not picked:
        raise UserError(f"--channels {spec!r}: no channel named")
    bad = [c for c in picked if not 0 <= c < n]
    if bad:
        raise UserError(f"channel {bad[0]} out of range: the layer has {n} channels (0..{n - 1})")
    return picked


def layer_channels(model: nn.Module, layer: str, preprocessing: dict) -> int:
    """The channel count of ``layer`` (a feature map), from one forward pass of zeros at the model's input size."""
    size = int(preprocessing.get("input_size", 224))
    param = next(model.parameters())
    with torch.no_grad(), LayerCapture(model, layer, stop=True) as cap:
        out = cap.run(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device))
    if not isinstance(out, Tensor) or out.dim() != 4:
        raise UserError(f"layer {layer} gives no 4-D feature map; pick another ('googlenet layers' lists them)")
    return int(out.shape[1])


def channel_activations(model: nn.Module, layer: str, source: DataSource, channels: Sequence[int], *,
                        preprocessing: dict, batch_size: int = 64, workers: int = 0,
                        device: str | torch.device = "cpu", progress: bool = True) -> tuple[Tensor, list[int], list]:
    """Mean activation of ``channels`` of ``layer`` on every image of ``source``, in one batched pass:
    (N_read x K, the dataset indices read, the Skipped files)."""
    from tqdm import tqdm

    from ..data.folder import Skipped
    from ..data.transforms import model_input
    from ..evaluate.ensemble import CropDataset, collate_list

    view = centre_view(preprocessing)
    loader = DataLoader(CropDataset(source.dataset, range(len(source.dataset)), [view]), batch_size=batch_size,
                        collate_fn=collate_list, num_workers=workers)
    idx = torch.tensor(list(channels), device=device)
    rows, scanned, skipped = [], [], []
    with torch.inference_mode(), LayerCapture(model, layer, stop=True) as cap, \
            tqdm(total=len(source.dataset), unit="img", desc="activations", file=sys.stderr,
                 disable=None if progress else True, dynamic_ncols=True) as bar:
        for batch in loader:
            bar.update(len(batch))
            skipped += [b for b in batch if isinstance(b, Skipped)]
            items = [b for b in batch if not isinstance(b, Skipped)]
            if not items:
                continue
            crops = torch.cat([item[2][view] for item in items])  # n x 3 x S x S uint8
            x = model_input(crops, preprocessing).to(device)
            rows.append(cap.run(x).index_select(1, idx).float().mean((-2, -1)).cpu())
            scanned += [item[0] for item in items]
    if not scanned:
        why = f" (e.g. {printable(skipped[0].path)}: {skipped[0].reason})" if skipped else ""
        raise UserError(f"no readable image in {source.description}{why}")
    return torch.cat(rows), scanned, skipped


def centre_view(preprocessing: dict):
    """The single centre crop ``eval --crops 1`` and ``predict`` cut, at the weights' size and interpolation."""
    from ..evaluate.crops import default_resize
    from ..evaluate.ensemble import View

    size = int(preprocessing.get("input_size", 224))
    return View("1", size, int(preprocessing.get("resize_size") or default_resize(size)),
                str(preprocessing.get("interpolation", "bilinear")))


def build_atlas(model: nn.Module, layer: str, source: DataSource, channels: Optional[str | Sequence[int]] = None, *,
                top: int = DEFAULT_TOP, steps: int = 512, size: int = 128, seed: int = 0,
                grayscale: Optional[bool] = None, batch_size: int = 64, workers: int = 0,
                device: str | torch.device = "cpu", progress: bool = True) -> Atlas:
    """Everything an atlas page shows, as tensors. ``channels``: a spec for ``parse_channels`` or a list."""
    from tqdm import tqdm

    from .visualize import visualize

    model = model.eval().to(device)
    resolve_layer(model, layer)  # an unknown layer is one line, before any work
    pre = dict(getattr(model, "preprocessing", None) or default_preprocessing())
    if grayscale is not None:
        pre["grayscale"] = grayscale
    n = layer_channels(model, layer, pre)
    chosen = (parse_channels(channels, n) if channels is None or isinstance(channels, str)
              else list(dict.fromkeys(int(c) for c in channels)))
    bad = [c for c in chosen if not 0 <= c < n] or ([] if chosen else ["none"])
    if bad:
        raise UserError(f"channel {bad[0]} out of range: the layer has {n} channels (0..{n - 1})")
    acts, scanned, skipped = channel_activations(model, layer, source, chosen, preprocessing=pre, batch_size=batch_size,
                                                 workers=workers, device=device, progress=progress)
    k = min(top, len(scanned))
    values, rows = acts.t().topk(k, dim=1)  # K x k, sorted from the highest
    items = torch.tensor(scanned)[rows]
    # Channels are optimised VIS_BATCH at a time: one batch is faster than one image at a time, and the chunks
    # bound the memory of --channels all (512 images through the net with their gradients).
    chunks = [chosen[i:i + VIS_BATCH] for i in range(0, len(chosen), VIS_BATCH)]
    bar = tqdm(total=steps * len(chunks), unit="step", desc="visualize", file=sys.stderr,
               disable=None if progress else True, dynamic_ncols=True)

    def advance(step: int, total: int) -> None:
        bar.update(1)
        if bar.n >= bar.total:
            bar.close()

    vis = torch.cat([visualize(model, layer, chunk, steps=steps, size=size, seed=seed, grayscale=grayscale,
                               device=device, progress=advance) for chunk in chunks])
    return Atlas(layer, n, chosen, vis, acts, scanned, values, items, pre, skipped)


# --- The page ---------------------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    """Every string put into the page is escaped (file names are user input)."""
    return html.escape(str(value), quote=True)


def dataset_image(source: DataSource, index: int, preprocessing: dict) -> Tensor:
    """Image ``index`` as the model saw it (the centre crop; grey for a grey model): 3 x S x S pixels in 0..1."""
    from torchvision.transforms.v2 import functional as TF

    item = source.dataset[index]
    if not isinstance(item, tuple):  # read a moment ago, unreadable now
        raise UserError(f"{printable(item.path)} changed while the atlas was made: {item.reason}")
    crop = centre_view(preprocessing).crops(item[0])[0]
    if preprocessing.get("grayscale", False):
        crop = TF.rgb_to_grayscale(crop, num_output_channels=3)
    return crop.float() / 255


def write_atlas(atlas: Atlas, source: DataSource, out: str | os.PathLike, *, info: dict[str, str],
                command: str = "") -> Path:
    """Writes ``out/index.html`` and its PNGs (relative links only: the folder opens from disk, moves as a whole).
    The PNGs are written first and the page last, each atomically: a failed run leaves no half page."""
    out = ensure_dir(out)
    for c, img in zip(atlas.channels, atlas.visualizations):
        save_png(img, out / f"channel_{c}.png")
    for i in sorted(set(atlas.top_items.flatten().tolist())):
        save_png(dataset_image(source, i, atlas.preprocessing), out / f"image_{i}.png")
    rows = []
    for r, c in enumerate(atlas.channels):
        figures = []
        for rank, (i, v) in enumerate(zip(atlas.top_items[r].tolist(), atlas.top_values[r].tolist()), 1):
            label, name = source.labels[i], _e(source.names[i])
            figures.append(f'<figure class="top"><img src="image_{i}.png" alt="{name}">'
                           f'<figcaption><b>{rank}.</b> {v:.4g}<br>{_e(label) + "<br>" if label else ""}'
                           f'<span class="name" title="{name}">{name}</span></figcaption></figure>')
        column = atlas.activations[:, r]
        note = ""
        if bool(column.max() == column.min()):  # a dead ReLU, say: every image ties, so the order means nothing
            note = f'<p class="note">the same activation ({float(column[0]):.4g}) on all {len(column)} images</p>'
        rows.append(f'<section class="channel" id="channel-{c}"><h2>channel {c}{note}</h2>'
                    f'<figure class="vis"><img src="channel_{c}.png" alt="feature visualisation of channel {c}">'
                    f'<figcaption>feature visualisation</figcaption></figure>'
                    f'<div class="tops">{"".join(figures)}</div></section>')
    meta = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info.items())
    if command:
        meta += f"<tr><th>made by</th><td><code>{_e(command)}</code></td></tr>"
    if atlas.skipped:
        first = atlas.skipped[0]
        meta += (f"<tr><th>unreadable</th><td>{len(atlas.skipped)} file(s) left out, e.g. "
                 f"{_e(printable(first.path))}: {_e(first.reason)}</td></tr>")
    template = Template(resources.files(__package__).joinpath("atlas.html").read_text(encoding="utf-8"))
    page = template.substitute(title=_e(f"Atlas of {atlas.layer} — {info.get('weights', '')}"), meta=meta,
                               rows="\n".join(rows))
    atomic_write_text(out / "index.html", page)
    return out / "index.html"
