"""``googlenet convert --from torchvision|caffe|inception5h IN OUT.safetensors``: another project's weights -> ours."""

from __future__ import annotations

import argparse
import os
from collections import Counter

from ..errors import UserError
from ..fileio import Unreadable, printable, read_bounded
from .common import print_result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="torchvision .pth, BVLC Caffe .caffemodel or inception5h .pth/.pb -> googlenet weights",
        description="torchvision: reads a state dict of torchvision's GoogLeNet (e.g. googlenet-1378be20.pth) with "
                    "torch.load(weights_only=True), so a pickle carrying code is refused and never run, and writes "
                    "googlenet_tv weights with transform_input on, ImageNet class names and torchvision's "
                    "preprocessing. caffe: reads BVLC's bvlc_googlenet.caffemodel (Caffe's binary NetParameter, no "
                    "Caffe needed) into the paper's googlenet, aux heads included, with BVLC's preprocessing (BGR, "
                    "0..255, mean 104/117/123). inception5h: reads Google's GoogLeNet (lucent's PyTorch port "
                    "inception5h.pth, weights only, or the TensorFlow graph tensorflow_inception_graph.pb, no "
                    "TensorFlow needed) into googlenet_inception5h (RGB, 0..255, minus 117; 1008 classes).")
    p.add_argument("--from", dest="source", choices=("torchvision", "caffe", "inception5h"), required=True,
                   help="checkpoint origin")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT.safetensors")
    p.add_argument("--drop-aux", action="store_true",
                   help="leave out the aux heads (untrained in torchvision's published weights)")
    p.add_argument("--labels", metavar="FILE",
                   help="class names, one per line (default: ImageNet's for 1000 classes; inception5h: "
                        "imagenet_comp_graph_label_strings.txt, line i = output i, else class_0..class_1007)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def _labels(path: str) -> list[str]:
    try:
        text = read_bounded(path, limit=16 * 1024 * 1024).decode("utf-8")
    except Unreadable as e:
        raise UserError(f"cannot read --labels {printable(path)}: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"--labels {printable(path)} is not UTF-8 text") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    # checked here, before the conversion, as save_model would refuse them only after it
    repeated = next((name for name, n in Counter(labels).items() if n > 1), None)
    if repeated is not None:
        raise UserError(f"--labels {printable(path)} names {repeated[:60]!r} twice: class names must be unique")
    return labels


def run(args: argparse.Namespace) -> int:
    aux = False if args.drop_aux else None
    if os.path.isdir(args.output):  # found now, not after the whole conversion as a temp file's error
        raise UserError(f"output {args.output} is a directory; give a file name, e.g. "
                        f"{args.output}/weights.safetensors")
    if args.source == "inception5h":
        from ..pretrained.inception5h import convert_inception5h

        if args.drop_aux:
            raise UserError("--drop-aux: the inception5h port has no aux heads to drop")
        # Its label file is read there: line i names output i, so blank lines count (unlike _labels).
        model = convert_inception5h(args.input, args.output, labels=args.labels)
    elif args.source == "caffe":
        from ..pretrained.bvlc import convert_caffe, from_caffemodel

        labels = _labels(args.labels) if args.labels else None
        if labels is not None:
            n = from_caffemodel(args.input, aux_logits=False).num_classes
            if len(labels) != n:
                raise UserError(f"--labels has {len(labels)} names for {n} classes")
        model = convert_caffe(args.input, args.output, aux_logits=aux, class_names=labels)
    else:
        from ..pretrained.torchvision_pth import convert_torchvision

        if args.labels is not None:
            raise UserError("--labels is for --from caffe or inception5h (torchvision's weights carry ImageNet's "
                            "classes)")
        model = convert_torchvision(args.input, args.output, aux_logits=aux)
    trunk = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("aux1.", "aux2.")))
    info = {"output": str(args.output), "arch": model.metadata["arch"], "num_classes": model.num_classes,
            "aux_logits": model.aux_logits, "parameters_without_aux": trunk,
            "sha256_of_input": model.metadata["source"]["sha256"], "preprocessing": model.metadata["preprocessing"]}
    print_result(args.json, info, f"wrote {args.output}: {info['arch']}, {info['num_classes']} classes, aux heads "
                                  f"{'kept' if info['aux_logits'] else 'left out'}, {trunk:,} parameters without aux")
    return 0
