"""stylize build: write model_repository/ from the descriptors (needs the `build` extra: torch, onnx)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_REPOSITORY = "model_repository"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="export the networks and write the Triton model repository")
    p.add_argument("models", nargs="*", help="model ids to build (default: all)")
    p.add_argument("-o", "--model-repository", type=Path,
                   default=Path(os.environ.get("STYLIZE_MODEL_REPOSITORY", DEFAULT_REPOSITORY)))
    p.add_argument("--weights", action="append", default=[], metavar="ID=PATH",
                   help="checkpoint for a model, e.g. animeganv2=face_paint_512_v2.pt (repeatable)")
    p.add_argument("--window", type=int, default=None, help="frames per BasicVSR request (default 7)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("STYLIZE_ORT_THREADS", "2")),
                   help="ONNX Runtime intra-op threads per model instance")
    p.add_argument("--trt", action="store_true", help="also build TensorRT FP16 plans (needs an NVIDIA GPU)")
    p.add_argument("--int8", action="store_true",
                   help="also build the INT8 variants (<id>_int8: static-quantized network, calibrated on real photos)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stylize.descriptors import REGISTRY, with_window

    weights: dict[str, Path] = {}
    for item in args.weights:
        model_id, sep, path = item.partition("=")
        if not sep or model_id not in REGISTRY:
            print(f"--weights expects ID=PATH with ID in {', '.join(REGISTRY)}; got {item!r}", file=sys.stderr)
            return 2
        if not Path(path).is_file():
            print(f"--weights {model_id}: no such file {path}", file=sys.stderr)
            return 2
        weights[model_id] = Path(path)
    ids = args.models or list(REGISTRY)
    unknown = [m for m in ids if m not in REGISTRY]
    if unknown:
        print(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    descs = [REGISTRY[m] for m in ids]
    if args.window is not None:
        descs = [with_window(d, args.window) if d.window else d for d in descs]

    if args.trt:
        from stylize_build.tensorrt import GPUUnavailable, require_tensorrt

        try:
            require_tensorrt()  # refuse before writing anything
        except GPUUnavailable as e:
            print(f"stylize build --trt: {e}", file=sys.stderr)
            return 3

    from stylize_build.repository import BuildSettings, build_repository

    settings = BuildSettings(repository=args.model_repository, weights=weights, threads=args.threads,
                             gpu=args.trt)
    results = build_repository(descs, settings, log=lambda s: print(s, flush=True))
    if args.trt:
        from stylize_build.tensorrt import build_plans

        build_plans(descs, settings, log=lambda s: print(s, flush=True))
    int8 = []
    if args.int8:
        from stylize_build.int8 import build_int8_repository

        int8 = build_int8_repository(descs, settings, log=lambda s: print(s, flush=True))
    changed = sum(len(r.written) for r in results) + sum(len(r.written) for r in int8)
    print(f"\n{'model':<18} {'version':>7}  {'weights':<10} {'parity':>6}  state")
    for r in results:
        state = "unchanged" if not r.written else ("reused" if r.reused else "new version")
        print(f"{r.id:<18} {r.net_version:>7}  {r.weights:<10} {str(r.parity_max_abs):>6}  {state}")
    for r in int8:
        q = r.quality or {}
        loss = q.get("loss_db")
        print(f"{REGISTRY[r.id].int8_ensemble:<18} {r.version:>7}  {r.weights:<10} {'':>6}  "
              f"{'unchanged' if not r.written else ('reused' if r.reused else 'new version')}; "
              f"fidelity {q.get('fidelity_psnr_db')} dB" + ("" if loss is None else f", PSNR loss {loss} dB"))
    print(f"\n{args.model_repository}: {changed} file(s) written")
    return 0
