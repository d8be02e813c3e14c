"""Where and how the CPU image step runs its network, side by side in one run: the numbers behind ``net_runtime``
(the step runs the network in its own process) and the step layout (instances x threads) of each CPU runtime
(build/stylize_build/pbtxt.py image_config).

    python -m stylize.loadtest.experiments.step_runtime_ab                        # OpenVINO, animevideo_x4 at 128²,
                                                                                  # fp32 and INT8
    python -m stylize.loadtest.experiments.step_runtime_ab esrgan_anime_x4 128 --rounds 4
    python -m stylize.loadtest.experiments.step_runtime_ab --runtime onnxruntime  # the ONNX Runtime experiment
                                                                                  # (BLS vs in the step)

One local server for every variant: a repository of symlinks to the built networks with each variant added as an
ensemble of its own (``stylize.loadtest.bench.add_variant``: its image step, and for BLS its own network model, with
the layout rewritten). Every round sends the same PNG to every variant in turn (2 requests in flight, order
rotating) and runs the runtime in-process on the same frame (one compiled model / session with 2 threads, and for
OpenVINO also 2 streams x 1 thread: the served layout's counterpart); ratios are taken within a round. Variants
(step instances x threads of each):

* ``bls net 1x2`` / ``bls net 2x1``: the step calls its network model by BLS, the network runs 1 x 2 / 2 x 1
* ``in step 1x2`` / ``in step 2x1``: the step runs the network itself
* OpenVINO also ``in step 2x2``: two step instances of 2 threads each (4 threads on 2 cores: does a step's network
  gain from both cores while the other instance decodes or encodes?)

A step process handles one request at a time, so streams within it would only matter for tiles run concurrently;
OpenVINO's streams appear here as the in-process counterpart of the instances. Needs the INT8 variant for the INT8
rows (``stylize build --int8 <id>``); prints a table, writes nothing.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from stylize.contract.descriptors import ENCODED_RESULT, REGISTRY
from stylize.engine.photos import real_photo_crop
from stylize.loadtest import bench
from stylize.server.launcher import start_local

# name: (net_runtime, step instances, threads per step instance, network (instances, threads) for BLS)
VARIANTS = {
    "onnxruntime": {
        "bls net 1x2": ("triton", 2, 1, (1, 2)),
        "bls net 2x1": ("triton", 2, 1, (2, 1)),
        "in step 1x2": ("onnxruntime", 1, 2, None),
        "in step 2x1": ("onnxruntime", 2, 1, None),
    },
    "openvino": {
        "bls net 1x2": ("triton", 2, 1, (1, 2)),
        "bls net 2x1": ("triton", 2, 1, (2, 1)),
        "in step 1x2": ("openvino", 1, 2, None),
        "in step 2x1": ("openvino", 2, 1, None),
        "in step 2x2": ("openvino", 2, 2, None),
    },
}


def variants(runtime: str, precision: str, *, int8: bool) -> dict[str, bench.Variant]:
    return {
        name: bench.Variant(
            instances=inst,
            threads=thr,
            net_runtime=net_runtime,
            precision=precision,
            net_layout=layout,
            net_backend=runtime,
            int8=int8,
        )
        for name, (net_runtime, inst, thr, layout) in VARIANTS[runtime].items()
    }


def reference_runners(runtime: str, precision: str, onnx: Path, desc, frame) -> dict[str, bench.Runner]:
    """In-process references: the runtime on one compiled model / session (2 threads), and OpenVINO's served-layout
    counterpart (2 streams x 1 thread)."""
    if runtime == "onnxruntime":
        return {"in-process 1x2": bench.OrtRunner("ort", "ort", onnx, desc, frame, 2)}
    return {
        "in-process 1x2": bench.OvRunner("ov", "ov", onnx, desc, frame, precision=precision, threads=2),
        "in-process 2 streams x1": bench.OvRunner(
            "ov", "ov", onnx, desc, frame, precision=precision, threads=2, streams=2
        ),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="animevideo_x4")
    p.add_argument("side", nargs="?", type=int, default=128)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--runtime", choices=tuple(VARIANTS), default="openvino")
    p.add_argument("--precision", default=None, help="OpenVINO precision (default: bf16 where the CPU has it)")
    p.add_argument("--no-int8", action="store_true", help="fp32 (or bf16) rows only")
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    args = p.parse_args(argv)
    from stylize.engine.ov_runner import default_precision

    precision = "fp32" if args.runtime == "onnxruntime" else (args.precision or default_precision())
    desc = REGISTRY[args.model]
    repo = args.model_repository
    side = args.side - args.side % desc.network.size_multiple
    frame = real_photo_crop(side, side, name="astronaut.png")
    png = bench._png(frame)
    kinds = [precision] + ([] if args.no_int8 or not bench.existing_versions(repo / desc.int8_model) else ["int8"])
    runners: dict[str, bench.Runner] = {}
    with tempfile.TemporaryDirectory(prefix="stylize-step-ab-") as tmp:
        served = Path(tmp) / "repository"  # only the variants (add_variant links the networks they need)
        names = {}
        for kind in kinds:
            for name, variant in variants(args.runtime, precision, int8=kind == "int8").items():
                names[f"{kind} {name}"] = bench.add_variant(repo, served, desc, f"{desc.id}_ab{len(names)}", variant)
        server = start_local(served)
        try:
            for key, model in names.items():
                runners[key] = bench.ServedRunner(
                    "served",
                    key,
                    server.grpc_url,
                    model,
                    bench._encoded_inputs(png),
                    ENCODED_RESULT.name,
                    2,
                    bench._check_png(desc, side, side),
                )
            for kind in kinds:
                onnx = bench._newest(repo, desc.int8_model if kind == "int8" else desc.net_model)[0]
                for ref, runner in reference_runners(args.runtime, precision, onnx, desc, frame).items():
                    runners[f"{kind} {ref}"] = runner
            t = min(r.run(2) for r in runners.values()) / 2  # warm-up, and the size of a round
            n = max(2, min(40, math.ceil(1.0 / t)))
            n += n % 2
            keys = list(runners)
            res: dict[str, list[float]] = {k: [] for k in keys}
            for rnd in range(args.rounds):
                for k in keys[rnd % len(keys) :] + keys[: rnd % len(keys)]:
                    res[k].append(runners[k].run(n) / n)
                print(f"round {rnd + 1}: " + ", ".join(f"{k} {1 / v[-1]:.2f}/s" for k, v in res.items()), flush=True)
        finally:
            for r in runners.values():
                r.close()
            server.stop()
    print(
        f"\n{desc.id} {side}², {args.runtime} {precision}, PNG in/out, 2 in flight, {n} images per runner per "
        "round; img/s of the fastest round, and each / in-process 1x2 (one compiled model or session, 2 threads) "
        "within each round: median [range]"
    )
    for k in keys:
        ref = res[f"{k.split()[0]} in-process 1x2"]
        ratios = sorted(a / b for a, b in zip(ref, res[k]))
        print(
            f"  {k:32s} {1 / min(res[k]):8.2f} img/s   {ratios[len(ratios) // 2]:.3f} "
            f"[{ratios[0]:.3f}-{ratios[-1]:.3f}]"
        )


if __name__ == "__main__":
    main()
