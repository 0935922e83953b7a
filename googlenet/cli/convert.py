"""``googlenet convert --from torchvision|caffe IN OUT.safetensors``: a pretrained checkpoint -> our weights file."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="pretrained GoogLeNet (torchvision .pth, BVLC .caffemodel) -> googlenet weights (.safetensors)",
                       description="Reads a state dict of torchvision's GoogLeNet (e.g. googlenet-1378be20.pth) with "
                                   "torch.load(weights_only=True), so a pickle carrying code is refused and never "
                                   "run, and writes a googlenet_tv weights file with transform_input on, ImageNet "
                                   "class names and torchvision's preprocessing (resize 256, crop 224). --from caffe "
                                   "reads BVLC's bvlc_googlenet.caffemodel without Caffe and writes the paper's "
                                   "googlenet with its aux heads and Caffe's input convention (BGR, 0..255, minus "
                                   "mean 104/117/123), which every command then applies. --from inception5h reads Google's "
                                   "GoogLeNet (the PyTorch port's inception5h.pth or the TensorFlow graph's .pb) "
                                   "into googlenet_inception5h (RGB, 0..255, minus 117; 1008 classes).")
    p.add_argument("--from", dest="source", choices=("torchvision", "caffe", "inception5h"), required=True, help="checkpoint origin")
    p.add_argument("input", metavar="IN", help="IN.pth (torchvision), IN.caffemodel (caffe), inception5h.pth or tensorflow_inception_graph.pb (inception5h)")
    p.add_argument("--labels", metavar="FILE", default=None,
                   help="inception5h: imagenet_comp_graph_label_strings.txt (default class_0..class_1007)")
    p.add_argument("output", metavar="OUT.safetensors")
    p.add_argument("--drop-aux", action="store_true",
                   help="leave out the aux heads (untrained in torchvision's published weights)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.labels is not None and args.source != "inception5h":
        raise UserError("--labels is for --from inception5h (the other sources carry their class names)")
    if args.drop_aux and args.source != "torchvision":
        raise UserError("--drop-aux is for --from torchvision")
    if args.source == "inception5h":
        from ..inception5h import convert_inception5h

        model = convert_inception5h(args.input, args.output, labels=args.labels)
    elif args.source == "caffe":
        from ..caffe import convert_caffe

        model = convert_caffe(args.input, args.output)
    else:
        from ..convert import convert_torchvision

        model = convert_torchvision(args.input, args.output, aux_logits=False if args.drop_aux else None)
    trunk = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("aux1.", "aux2.")))
    info = {"output": str(args.output), "arch": model.metadata["arch"], "num_classes": model.num_classes,
            "aux_logits": model.aux_logits, "parameters_without_aux": trunk,
            "sha256_of_input": model.metadata["source"]["sha256"]}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"wrote {args.output}: {info['arch']}, {info['num_classes']} classes, "
              f"aux heads {'kept' if info['aux_logits'] else 'left out'}, {trunk:,} parameters without aux")
    return 0
