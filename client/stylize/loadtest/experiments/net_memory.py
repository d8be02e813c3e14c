"""Peak memory of one request to each network, as its stub runs it (OpenVINO, fp32, one thread: the served
settings), against the request's input pixels: the figure behind ``max_request_pixels`` (the network models refuse
larger requests) and behind the worst case of a pod's memory (docs/reliability.md).

    python -m stylize.loadtest.experiments.net_memory [--repo model_repository] [--out k8s/capacity/net-memory.json]

Each point is a fresh process: compile the network's newest file, run one small request (the baseline), then one
request of the measured size; the growth of the peak resident set (VmHWM) over the baseline is the request's cost.
Two sizes per network give a line (convolution activations grow linearly with the pixels); the worst case at
``max_request_pixels`` is read off that line and says so (extrapolated) where the limit is above the sizes run.

The image steps are measured whole, the same way: a fresh process opens the step's network as the step does (its
config.pbtxt parameters: runtime, threads, precision, tiles) and runs ``pipeline.process`` on one small image (the
baseline), then on one image of the measured size: a real photo as a 16-bit RGBA PNG, the widest input the step
takes (its buffers: colour, alpha, the 16-bit residual), PNG out. Two sizes, both tiled (or both shrunk to
``max_side``), give a line in the input pixels, read at the largest image the step admits:
``min(max_pixels, max_output_pixels / scale²)`` input pixels. A request's images share those limits (pipeline.Spent),
so the results it holds before answering add at most ``max_output_pixels`` x 8 bytes (16-bit RGBA, incompressible).

The pod's worst case adds every stub at its peak at once: each network model's instances at ``max_request_pixels``,
each image step's instances at their largest image; instance counts are read from the repository's configs. The
idle server (libraries, compiled networks), /dev/shm and the response cache come on top: stylize_k8s.memory_budget.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from stylize.contract.descriptors import REGISTRY, ModelDescriptor
from stylize.contract.step import StepConfig
from stylize.engine.network import newest_model_file

# (batch, side) of the two measured requests: small enough to run in seconds on one core
SIZES = {
    "animeganv2": [(1, 256), (1, 512)],
    "esrgan_x4": [(1, 96), (1, 192)],
    "esrgan_anime_x4": [(1, 96), (1, 192)],
    "animevideo_x2": [(1, 192), (1, 384)],
    "animevideo_x3": [(1, 192), (1, 384)],
    "animevideo_x4": [(1, 192), (1, 384)],
    "basicvsr_x4": [(1, 64), (1, 128)],
}

_HWM = r"""
def hwm_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
"""

_CHILD = (
    _HWM
    + r"""
import json, resource, sys
import numpy as np
from pathlib import Path
from stylize.engine.ov_runner import CompileSettings, compile_network

path, shape = Path(sys.argv[1]), json.loads(sys.argv[2])
net = compile_network(path, CompileSettings(precision="fp32", threads=1))
request = net.compiled.create_infer_request()
small = [1, 2, 16, 16, 3] if len(shape) == 5 else [1, 16, 16, 3]
request.infer({0: np.zeros(small, np.uint8)})

base = hwm_kib()
rng = np.random.default_rng(0)
request.infer({0: rng.integers(0, 256, size=shape, dtype=np.uint8)})
print(json.dumps({"base_mib": base / 1024, "peak_mib": hwm_kib() / 1024}))
"""
)


# Input sides of the two measured images per image step: both tiled (both above one call's budget) or, for
# animeganv2, both shrunk to its max_side (768); seconds to a minute each on one core
STEP_SIDES = {
    "animeganv2": (800, 1024),
    "esrgan_x4": (320, 448),
    "esrgan_anime_x4": (320, 448),
    "animevideo_x2": (768, 1024),
    "animevideo_x3": (768, 1024),
    "animevideo_x4": (768, 1024),
}
HELD_RESULT_BYTES_PER_PIXEL = 8  # 16-bit RGBA PNG, incompressible: the most a request's earlier results can hold

_STEP_CHILD = (
    _HWM
    + r"""
import json, sys
import numpy as np
from pathlib import Path
from PIL import Image
from stylize.contract.descriptors import FRAME_IN, FRAME_OUT
from stylize.engine.imaging import encode
from stylize.engine.network import open_network
from stylize.engine.photos import real_photo_crop
from stylize.contract.step import StepConfig
from stylize.engine.pipeline import parse_options, process

params, path, side = json.loads(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
config = StepConfig.from_parameters(params)
net = open_network(path, runtime=config.net_runtime, input_name=FRAME_IN.name, output_name=FRAME_OUT.name,
                   threads=config.net_threads, precision=config.net_precision)

def png16(side):
    color = np.asarray(Image.fromarray(real_photo_crop(512, 512)).resize((side, side), Image.BICUBIC), np.uint16)
    alpha = np.linspace(1000, 65535, side * side, dtype=np.uint16).reshape(side, side, 1)
    color = color * 257 + (np.arange(side, dtype=np.uint16)[None, :, None] % 257)  # the low byte carries detail
    return encode(color, alpha[:, :, 0], fmt="PNG")  # the step's own 16-bit PNG writer

options = parse_options(config, parameters={}, tensors={})
process(png16(64), config, options, net)
base = hwm_kib()
data = png16(side)
out, report = process(data, config, options, net)
print(json.dumps({"base_mib": base / 1024, "peak_mib": hwm_kib() / 1024, "input_pixels": report.input_pixels,
                  "output_pixels": report.output_pixels, "tiles": report.tiles, "result_bytes": len(out)}))
"""
)


def largest_step_input(step: StepConfig) -> int:
    """Input pixels of the largest image the step admits: max_pixels, and max_output_pixels at the model's scale."""
    return min(step.limits.max_pixels, step.limits.max_output_pixels // (step.scale * step.scale))


def measure_step(repo: Path, desc: ModelDescriptor, net_file: Path, net_growth) -> dict:
    """``net_growth``: the network's line (MiB by pixels of one call). Each point also says what of its growth is
    the network's own, at the largest call the image made (one tile; untiled, the image at ``max_side``): that
    part the step keeps (counted in ``keeps_mib``); the rest it borrows for the image (``borrowed_mib``: what
    stylize.engine.memory_budget.COSTS estimates)."""
    from stylize.engine.imaging import fit_within
    from stylize.loadtest.bench import served_step

    step, _ = served_step(repo, desc)  # the step's settings as the repository serves them
    params = step.parameters()
    points = []
    for side in STEP_SIDES[desc.id]:
        out = subprocess.run(
            [sys.executable, "-c", _STEP_CHILD, json.dumps(params), str(net_file), str(side)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if r["tiles"] > 1:
            call = desc.serving.tiling.size**2
        else:
            h, w = fit_within(side, side, desc.serving.max_side) if desc.serving.max_side else (side, side)
            call = h * w
        growth = round(r["peak_mib"] - r["base_mib"], 1)
        points.append(
            {
                "side": side,
                "pixels": r["input_pixels"],
                "output_pixels": r["output_pixels"],
                "tiles": r["tiles"],
                "growth_mib": growth,
                "base_mib": round(r["base_mib"], 1),
                "network_call_pixels": call,
                "network_growth_mib": round(net_growth(call), 1),
                "borrowed_mib": round(growth - net_growth(call), 1),
            }
        )
    (p0, p1) = points
    slope = (p1["growth_mib"] - p0["growth_mib"]) / (p1["pixels"] - p0["pixels"])
    largest = largest_step_input(step)
    at_largest = p1["growth_mib"] + slope * (largest - p1["pixels"])
    held = step.limits.max_output_pixels * HELD_RESULT_BYTES_PER_PIXEL / 2**20
    return {
        "points": points,
        "kib_per_input_pixel": round(slope * 1024, 3),
        "largest_input_pixels": largest,
        "growth_at_largest_mib": round(at_largest, 1),
        "held_results_mib": round(held, 1),
        "extrapolated": largest > p1["pixels"],
        "peak_mib": round(at_largest + held, 1),
    }


def shape_of(desc: ModelDescriptor, batch: int, side: int) -> list[int]:
    return [batch, desc.window, side, side, 3] if desc.window else [batch, side, side, 3]


def pixels(shape: list[int]) -> int:
    n = 1
    for d in shape[:-1]:
        n *= d
    return n


def instances(repo: Path, name: str) -> int:
    """Instances of a Triton model in the repository (the sum of its instance groups' counts; 0 if absent)."""
    cfg = repo / name / "config.pbtxt"
    if not cfg.is_file():
        return 0
    return sum(int(n) for n in re.findall(r"count:\s*(\d+)", cfg.read_text())) or 1


def step_network_pixels(desc: ModelDescriptor) -> int:
    """The largest network call an image step makes in process: a tiled network's call budget (an image within
    ``tile_batch`` tiles of ``tile_size``² goes whole, in one call: tiling.plan_tiles; larger ones go one tile per
    call), or, untiled, the whole image after its shrink to ``max_side`` (at most ``max_pixels``)."""
    from stylize.contract.descriptors import DEFAULT_MAX_PIXELS

    serving = desc.serving
    if serving.tiling:
        return serving.tiling.batch * serving.tiling.size**2
    whole = serving.max_pixels or DEFAULT_MAX_PIXELS
    return min(whole, serving.max_side**2) if serving.max_side else whole


def measure(repo: Path, model: str) -> dict:
    desc = REGISTRY[model]
    found = newest_model_file(repo, desc.net_model)
    if found is None:
        raise SystemExit(f"{desc.net_model}: no model file in {repo} (run `stylize build`)")
    path, version = found
    points = []
    for batch, side in SIZES[model]:
        shape = shape_of(desc, batch, side)
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), json.dumps(shape)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        points.append(
            {
                "shape": shape,
                "pixels": pixels(shape),
                "growth_mib": round(r["peak_mib"] - r["base_mib"], 1),
                "base_mib": round(r["base_mib"], 1),
            }
        )
    (p0, p1) = points
    slope = (p1["growth_mib"] - p0["growth_mib"]) / (p1["pixels"] - p0["pixels"])  # MiB per pixel

    def growth(px: int) -> float:  # the line through the two points
        return p1["growth_mib"] + slope * (px - p1["pixels"])

    at_limit = growth(desc.max_request_pixels)

    net_n, step_n = instances(repo, desc.net_model), 0 if desc.window else instances(repo, desc.image_model)
    step = measure_step(repo, desc, path, growth) if step_n else None
    step_px = step_network_pixels(desc) if step_n else 0
    return {
        "model": model,
        "net_model": desc.net_model,
        "version": version,
        "points": points,
        "kib_per_pixel": round(slope * 1024, 3),
        "max_request_pixels": desc.max_request_pixels,
        "growth_at_limit_mib": round(at_limit, 1),
        "base_mib": p1["base_mib"],
        "extrapolated": desc.max_request_pixels > p1["pixels"],
        "net_instances": net_n,
        "step_instances": step_n,
        "step": step,
        # what the model's stubs keep once they ran their largest calls (OpenVINO keeps a network's peak)
        "step_network_pixels": step_px,
        "step_network_growth_mib": round(growth(step_px), 1) if step_n else 0.0,
        "keeps_mib": round(net_n * at_limit + (step_n * growth(step_px) if step_n else 0.0), 1),
        # every stub at its peak at once, without a memory budget: what the limits alone bound
        "worst_case_without_budget_mib": round(net_n * at_limit + (step_n * step["peak_mib"] if step else 0.0), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("model_repository"))
    ap.add_argument("--models", default=",".join(SIZES))
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    rows = []
    for model in args.models.split(","):
        row = measure(args.repo, model)
        rows.append(row)
        print(
            f"{model:16s} {row['kib_per_pixel']:8.3f} KiB/px  base {row['base_mib']:7.1f} MiB  "
            f"limit {row['max_request_pixels']:>10,d} px -> +{row['growth_at_limit_mib']:8.1f} MiB"
            f"{' (extrapolated)' if row['extrapolated'] else ''}  points "
            + ", ".join(f"{p['pixels']:,d} px +{p['growth_mib']} MiB" for p in row["points"]),
            flush=True,
        )
        if row["step"]:
            st = row["step"]
            print(
                f"{'':16s} image step: {st['kib_per_input_pixel']:.3f} KiB/input px, largest image "
                f"{st['largest_input_pixels']:,d} px -> +{st['growth_at_largest_mib']:.1f} MiB"
                f"{' (extrapolated)' if st['extrapolated'] else ''} + held results {st['held_results_mib']:.0f} "
                "MiB; points "
                + ", ".join(f"{p['side']}² +{p['growth_mib']} MiB ({p['tiles']} tiles)" for p in st["points"]),
                flush=True,
            )
    keeps = sum(r["keeps_mib"] for r in rows)
    unbounded = sum(r["worst_case_without_budget_mib"] for r in rows)
    print(
        f"what every stub keeps after its largest calls: +{keeps:,.0f} MiB over the idle server; every stub at "
        f"its peak at once (no memory budget): +{unbounded:,.0f} MiB"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "format": "stylize-net-memory/2",
                    "keeps_mib": round(keeps, 1),
                    "worst_case_without_budget_mib": round(unbounded, 1),
                    "models": rows,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
