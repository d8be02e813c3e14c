"""Where the CPU image step's network runs, side by side in one run: the numbers behind ``net_runtime`` (the step
runs the network in its own process) and the 2 x 1-thread step layout (build/stylize_build/pbtxt.py image_config).

    python -m loadtest.step_runtime_ab                         # animevideo_x4 at 128², fp32 and INT8 (~5 min)
    python -m loadtest.step_runtime_ab esrgan_anime_x4 128 --rounds 4

One local server per variant, all started first (an idle server costs no CPU), each on a repository of symlinks to
the built models with only the image step's config (and, for BLS, the network's layout) rewritten
(``stylize_build.bench.layout_repository``). Every round
sends the same PNG to every variant in turn (2 requests in flight, order rotating) and runs in-process ONNX Runtime
(one session, 2 threads) on the same frame; the ratios are taken within a round. Variants:

* ``bls net 1x2``: the step calls ``<id>_net`` by BLS; the network runs 1 instance x 2 threads
* ``bls net 2x1``: the same with 2 network instances x 1 thread
* ``in step 1x2`` / ``in step 2x1``: the step runs the network itself (instances x threads of the step)

Needs the INT8 variant for the INT8 rows (``stylize build --int8 <id>``); prints a table, writes nothing.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from stylize.descriptors import ENCODED_RESULT, REGISTRY
from stylize.photos import real_photo_crop
from stylize.server.launcher import start_local
from stylize_build import bench

VARIANTS = {  # name: (net_runtime, step instances, threads per step instance, network (instances, threads))
    "bls net 1x2": ("triton", 2, 1, (1, 2)),
    "bls net 2x1": ("triton", 2, 1, (2, 1)),
    "in step 1x2": ("onnxruntime", 1, 2, None),
    "in step 2x1": ("onnxruntime", 2, 1, None),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="animevideo_x4")
    p.add_argument("side", nargs="?", type=int, default=128)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    args = p.parse_args(argv)
    desc = REGISTRY[args.model]
    repo = args.model_repository
    side = args.side - args.side % desc.size_multiple
    frame = real_photo_crop(side, side, name="astronaut.png")
    png = bench._png(frame)
    precisions = ["fp32"] + (["int8"] if bench.existing_versions(repo / desc.int8_model) else [])
    servers, runners = [], {}
    with tempfile.TemporaryDirectory(prefix="stylize-step-ab-") as tmp:
        try:
            for prec in precisions:
                for name, (runtime, inst, thr, net_layout) in VARIANTS.items():
                    key = f"{prec} {name}"
                    target = bench.layout_repository(
                        repo, Path(tmp) / key.replace(" ", "_"), desc, instances=inst, threads=thr,
                        int8=prec == "int8", net_runtime=runtime, net_layout=net_layout)
                    server = start_local(target)
                    servers.append(server)
                    model = desc.int8_ensemble if prec == "int8" else desc.id
                    runners[key] = bench.ServedRunner("served", key, server.grpc_url, model,
                                                      bench._encoded_inputs(png), ENCODED_RESULT.name, 2,
                                                      bench._check_png(desc, side, side))
                onnx = bench._newest(repo, desc.int8_model if prec == "int8" else desc.net_model)[0]
                runners[f"{prec} ORT in-process"] = bench.OrtRunner("ort", "ort", onnx, desc, frame, 2)
            t = min(r.run(2) for r in runners.values()) / 2  # warm-up, and the size of a round
            n = max(2, min(40, math.ceil(1.0 / t)))
            n += n % 2
            keys = list(runners)
            res: dict[str, list[float]] = {k: [] for k in keys}
            for rnd in range(args.rounds):
                for k in keys[rnd % len(keys):] + keys[:rnd % len(keys)]:
                    res[k].append(runners[k].run(n) / n)
                print(f"round {rnd + 1}: " + ", ".join(f"{k} {1 / v[-1]:.2f}/s" for k, v in res.items()), flush=True)
        finally:
            for r in runners.values():
                r.close()
            for s in servers:
                s.stop()
    print(f"\n{desc.id} {side}², PNG in/out, 2 in flight, {n} images per runner per round; img/s of the fastest "
          "round, and served / in-process ORT (2 threads) within each round: median [range]")
    for k in keys:
        ref = res[f"{k.split()[0]} ORT in-process"]
        ratios = sorted(a / b for a, b in zip(ref, res[k]))
        print(f"  {k:26s} {1 / min(res[k]):8.2f} img/s   {ratios[len(ratios) // 2]:.3f} "
              f"[{ratios[0]:.3f}-{ratios[-1]:.3f}]")


if __name__ == "__main__":
    main()
