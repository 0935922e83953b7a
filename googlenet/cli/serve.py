"""``googlenet serve``: a weights file over HTTP (Open Inference Protocol v2, /v1/classify, a demo page)."""

from __future__ import annotations

import argparse
import re
import signal
import sys

from ..errors import UserError
from .common import add_weights_flag, non_negative_int, positive_float, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP inference server: Open Inference Protocol v2, dynamic batching, a page",
                       description="Serves one weights file with the same preprocessing and inference path as "
                                   "predict. Binds to 127.0.0.1 unless --host says otherwise. Needs the [serve] "
                                   "extra. SIGTERM (or Ctrl-C) finishes the requests in flight, then exits 0.")
    add_weights_flag(p)
    p.add_argument("--name", default="googlenet", help="model name in the v2 routes (default googlenet)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=non_negative_int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    p.add_argument("--backend", choices=("auto", "eager", "compile", "onnxruntime"), default="auto",
                   help="auto (default): the fastest for the precision (ONNX Runtime for fp32/int8, eager for bf16)")
    p.add_argument("--crops", choices=("1", "10"), default="1", help="crops per image (default 1)")
    p.add_argument("--max-batch", type=positive_int, default=8, help="images per model batch (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait to fill a batch (default 5)")
    p.add_argument("--max-queue", type=positive_int, default=64, help="requests waiting before 503 (default 64)")
    p.add_argument("--max-body-mb", type=positive_float, default=8.0, help="request body limit in MiB (default 8)")
    p.add_argument("--timeout-s", type=positive_float, default=30.0, help="request deadline, 504 past it")
    p.add_argument("--read-timeout-s", type=positive_float, default=10.0,
                   help="longest wait for the next chunk of a body, 408 past it (default 10)")
    p.add_argument("--body-timeout-s", type=positive_float, default=30.0,
                   help="longest a whole request body may take to arrive, 408 past it (default 30)")
    p.add_argument("--max-decodes", type=positive_int, default=4,
                   help="uploads decoded at once; the others wait their turn within --timeout-s (default 4)")
    p.add_argument("--max-connections", type=positive_int, default=512,
                   help="open connections and tasks before new ones get 503 (default 512)")
    p.add_argument("--cors-origin", default=None, help="allow this one origin to call the API from a browser")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve.app import ServeConfig, create_app
        from ..serve.model import ServedModel
    except ImportError as e:
        raise UserError(f'googlenet serve needs the [serve] extra ({e.name} is missing): '
                        f'pip install "googlenet[serve]"') from None
    from ..inference import fastest_backend
    from ..pretrained import load_weights_arg

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.name):
        raise UserError(f"--name must be 1-64 letters, digits, '_', '.' or '-', got {args.name!r}")
    if not 0 <= args.max_wait_ms <= 10_000:
        raise UserError(f"--max-wait-ms must be between 0 and 10000, got {args.max_wait_ms:g}")
    if args.port > 65535:
        raise UserError(f"--port must be at most 65535, got {args.port}")
    backend = fastest_backend(args.precision) if args.backend == "auto" else args.backend
    if args.precision == "int8" and backend != "onnxruntime":
        raise UserError("--precision int8 runs on ONNX Runtime: use --backend onnxruntime (or auto)")
    if args.precision == "bf16" and backend == "onnxruntime":
        raise UserError("ONNX Runtime has no bf16 convolutions on the CPU: use --backend eager or compile for bf16")

    model = load_weights_arg(args.weights)
    served = ServedModel(model, name=args.name, precision=args.precision, backend=backend, scheme=args.crops)
    config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                         max_body_bytes=int(args.max_body_mb * 1024 * 1024), timeout_s=args.timeout_s,
                         read_timeout_s=args.read_timeout_s, body_timeout_s=args.body_timeout_s,
                         max_decodes=args.max_decodes, cors_origin=args.cors_origin)
    app = create_app(served, config)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"googlenet serve: note: listening on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"googlenet serve: {args.name} ({getattr(model, 'arch_name', 'googlenet')}, {served.num_classes} classes, "
          f"{served.input_size}x{served.input_size}, {args.precision} on {backend}, {args.crops} crop(s), "
          f"batches of up to {args.max_batch}) on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    # h11 (not httptools) for its documented limits: a request head over 16 KiB (e.g. 10,000 headers) is refused.
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, http="h11", lifespan="on",
                                           log_level="warning", access_log=False, timeout_keep_alive=5,
                                           limit_concurrency=args.max_connections,
                                           timeout_graceful_shutdown=max(args.timeout_s, 1.0),
                                           h11_max_incomplete_event_size=16 * 1024))
    # uvicorn handles SIGTERM itself (stop accepting, finish open requests, lifespan drains the batcher) and then
    # re-raises the signal to the handler found at start: a no-op one makes a drained shutdown exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    return 0
