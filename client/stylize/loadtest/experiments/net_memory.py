"""Peak memory of one request to each network, as its stub runs it (OpenVINO, fp32, one thread: the served
settings), against the request's input pixels: the figure behind ``max_request_pixels`` (the network models refuse
larger requests) and behind the worst case of a pod's memory (docs/reliability.md).

    python -m stylize.loadtest.experiments.net_memory [--repo model_repository] [--out k8s/capacity/net-memory.json]

Each point is a fresh process: compile the network's newest file, run one small request (the baseline), then one
request of the measured size; the growth of the peak resident set (VmHWM) over the baseline is the request's cost.
Two sizes per network give a line (convolution activations grow linearly with the pixels); the worst case at
``max_request_pixels`` is read off that line and says so (extrapolated) where the limit is above the sizes run.

The pod's worst case adds every stub at its peak at once: each network model's instances at ``max_request_pixels``,
and each image step's instances running their network in process at one tile (``tile_size``², the CPU's one tile
per call) or, untiled, at ``max_pixels``; instance counts are read from the repository's configs. The idle server
(libraries, compiled networks) comes on top: measured by stylize.loadtest.experiments.server_memory.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from stylize.contract.descriptors import REGISTRY, ModelDescriptor
from stylize.engine.network import newest_model_file

# (batch, side) of the two measured requests: small enough to run in seconds on one core
SIZES = {"animeganv2": [(1, 256), (1, 512)], "esrgan_x4": [(1, 96), (1, 192)], "esrgan_anime_x4": [(1, 96), (1, 192)],
         "animevideo_x2": [(1, 192), (1, 384)], "animevideo_x3": [(1, 192), (1, 384)],
         "animevideo_x4": [(1, 192), (1, 384)], "basicvsr_x4": [(1, 64), (1, 128)]}

_CHILD = r"""
import json, resource, sys
import numpy as np
from pathlib import Path
from stylize.engine.ov_runner import CompileSettings, compile_network

path, shape = Path(sys.argv[1]), json.loads(sys.argv[2])
net = compile_network(path, CompileSettings(precision="fp32", threads=1))
request = net.compiled.create_infer_request()
small = [1, 2, 16, 16, 3] if len(shape) == 5 else [1, 16, 16, 3]
request.infer({0: np.zeros(small, np.uint8)})

def hwm_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])

base = hwm_kib()
rng = np.random.default_rng(0)
request.infer({0: rng.integers(0, 256, size=shape, dtype=np.uint8)})
print(json.dumps({"base_mib": base / 1024, "peak_mib": hwm_kib() / 1024}))
"""


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


def step_pixels(desc: ModelDescriptor) -> int:
    """What an image step runs through its network in process at once: one tile, or the whole image."""
    from stylize.contract.descriptors import DEFAULT_MAX_PIXELS
    from stylize.contract.tiling import CPU_TILES_PER_CALL

    return CPU_TILES_PER_CALL * desc.tile_size ** 2 if desc.tile_size else desc.max_pixels or DEFAULT_MAX_PIXELS


def measure(repo: Path, model: str) -> dict:
    desc = REGISTRY[model]
    found = newest_model_file(repo, desc.net_model)
    if found is None:
        raise SystemExit(f"{desc.net_model}: no model file in {repo} (run `stylize build`)")
    path, version = found
    points = []
    for batch, side in SIZES[model]:
        shape = shape_of(desc, batch, side)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(shape)], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        points.append({"shape": shape, "pixels": pixels(shape), "growth_mib": round(r["peak_mib"] - r["base_mib"], 1),
                       "base_mib": round(r["base_mib"], 1)})
    (p0, p1) = points
    slope = (p1["growth_mib"] - p0["growth_mib"]) / (p1["pixels"] - p0["pixels"])  # MiB per pixel

    def growth(px: int) -> float:  # the line through the two points
        return p1["growth_mib"] + slope * (px - p1["pixels"])

    at_limit = growth(desc.max_request_pixels)

    net_n, step_n = instances(repo, desc.net_model), 0 if desc.window else instances(repo, desc.image_model)
    step_px = 0 if desc.window else step_pixels(desc)
    return {"model": model, "net_model": desc.net_model, "version": version, "points": points,
            "kib_per_pixel": round(slope * 1024, 3), "max_request_pixels": desc.max_request_pixels,
            "growth_at_limit_mib": round(at_limit, 1), "base_mib": p1["base_mib"],
            "extrapolated": desc.max_request_pixels > p1["pixels"],
            "net_instances": net_n, "step_instances": step_n, "step_pixels": step_px,
            "step_growth_mib": round(growth(step_px), 1) if step_px else 0.0,
            "worst_case_mib": round(net_n * at_limit + (step_n * growth(step_px) if step_px else 0.0), 1)}


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
        print(f"{model:16s} {row['kib_per_pixel']:8.3f} KiB/px  base {row['base_mib']:7.1f} MiB  "
              f"limit {row['max_request_pixels']:>10,d} px -> +{row['growth_at_limit_mib']:8.1f} MiB"
              f"{' (extrapolated)' if row['extrapolated'] else ''}  points "
              + ", ".join(f"{p['pixels']:,d} px +{p['growth_mib']} MiB" for p in row["points"]), flush=True)
    total = sum(r["worst_case_mib"] for r in rows)
    print(f"every stub at its peak at once: +{total:,.0f} MiB over the idle server")
    if args.out:
        args.out.write_text(json.dumps({"format": "stylize-net-memory/1", "worst_case_growth_mib": round(total, 1),
                                        "models": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
