"""How long a server pod must be given to drain: from the longest request its image steps admit to the Deployment's
``--exit-timeout-secs`` and ``terminationGracePeriodSeconds`` (k8s/base/deployment.yaml).

    python -m stylize_k8s.drain          # the derivation, per model, and the two values
    python -m stylize_k8s.drain --check  # exit 1 if k8s/base/deployment.yaml disagrees (tests/k8s run this too)

Per image model, the longest request:

* input: the largest the step admits (``max_pixels`` of the build's limits, capped by the descriptor's own
  ``serving.max_pixels``: ``StepConfig.from_descriptor``), shrunk to ``serving.max_side`` first where the descriptor
  has one. The output limit does not bound the work: a small ``outscale`` shrinks the output after the network has
  run;
* network pixels: what the step's tile plan computes for a square input of that size (overlaps included);
* seconds per network pixel, measured served (docs/performance/bench.json, ``breakdown.served.request_ms`` at the
  largest size measured): one request per step instance with one intra-op thread, the layout the default build
  (``--threads 2``) gives a pod;
* times :data:`SLOWDOWN`.

Triton 2.51 on SIGTERM first waits for its HTTP connections to close, idle keep-alive ones included, counting that
time against ``--exit-timeout-secs``, then gives the server what is left to finish in-flight requests and unload
(tritonserver main.cc StopEndpoints / HTTPServer::Stop). The server keeps serving during that wait, so a request
running at SIGTERM has the whole exit timeout, not more: when it runs out the HTTP endpoint closes, with the
responses of HTTP requests still running. (gRPC requests outlive it: seen on 2.51, the process exits only once
they have returned, so for them the kubelet's SIGKILL at the grace period is the bound.) Hence the exit timeout
covers the longest request plus :data:`STOP_S`, and the grace period adds the preStop sleep and
:data:`KILL_MARGIN_S`. tests/k8s/test_drain.py starts a real tritonserver with the Deployment's flags: requests in
flight at SIGTERM (gRPC and HTTP, an idle keep-alive connection open) return; with an exit timeout shorter than
the request the HTTP one is cut off.

Not covered: raw-frame requests (video, ``infer_frames``) go to the networks directly, which Triton bounds by no
pixel limit; the SDK sends one tile per request (seconds at most), a client sending whole large frames is not
drained. Requests queued behind the longest one on the same instance are not covered either.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from stylize.contract import descriptors

from stylize_k8s import K8S, ROOT

BENCH = ROOT / "docs" / "performance" / "bench.json"
DEPLOYMENT = K8S / "base" / "deployment.yaml"

# Assumption, not measured: the longest request shares its core with other work at shutdown (the benchmark ran two
# requests on two cores; a pod at the HPA's target runs at 70-85 % of its CPUs, docs/capacity.md).
SLOWDOWN = 1.5
# After the last request: unloading the models and the python stubs exiting (the real-server drain test measures
# this on a small repository; the deployed one unloads more models).
STOP_S = 15
PRESTOP_S = 10  # the preStop sleep: endpoint removal reaches kube-proxy and clients before SIGTERM
KILL_MARGIN_S = 10  # between Triton's own deadline and the kubelet's SIGKILL
# cluster-autoscaler's default --max-graceful-termination-sec: a node scale-down does not wait longer for a pod.
CEILING_S = 600


@dataclass(frozen=True)
class LongestRequest:
    model: str
    input_side: int  # of the square input the step admits (after max_side)
    network_pixels: int  # the tile plan's, overlaps included
    seconds_per_pixel: float  # measured served, one thread
    measured_at: int  # side of the benchmark case it comes from

    @property
    def seconds(self) -> float:
        return self.network_pixels * self.seconds_per_pixel * SLOWDOWN


@dataclass(frozen=True)
class Drain:
    longest: tuple[LongestRequest, ...]
    exit_timeout_s: int
    grace_s: int

    @property
    def worst(self) -> LongestRequest:
        return max(self.longest, key=lambda r: r.seconds)


def _build_limits():
    """The limits the build writes into the image steps (BuildSettings' defaults, as `stylize build` uses them)."""
    from stylize.contract.step import Limits
    from stylize_build.repository import BuildSettings

    s = BuildSettings(repository=Path("unused"))
    return Limits(max_pixels=s.max_pixels, max_bytes=s.max_bytes, max_output_pixels=s.max_output_pixels)


def seconds_per_pixel(bench: dict) -> dict[str, tuple[int, float]]:
    """Per model: (side, served seconds per input pixel) at the largest size the benchmark measured."""
    out: dict[str, tuple[int, float]] = {}
    for case in bench["cases"]:
        served = case.get("breakdown", {}).get("served") or {}
        if not served.get("request_ms"):
            continue
        side = int(case["side"])
        if case["model"] not in out or side > out[case["model"]][0]:
            out[case["model"]] = (side, served["request_ms"] / 1000 / side**2)
    return out


def longest_request(desc, limits, measured: tuple[int, float]) -> LongestRequest:
    from stylize.contract.step import StepConfig
    from stylize.contract.tiling import CPU_TILES_PER_CALL, plan_tiles

    config = StepConfig.from_descriptor(desc, limits=limits, tiles_per_call=CPU_TILES_PER_CALL)
    side = math.isqrt(config.limits.max_pixels)
    if config.max_side:
        side = min(side, config.max_side)
    if config.tile_size:
        plan = plan_tiles(
            side,
            side,
            tile=config.tile_size,
            overlap=config.tile_overlap,
            multiple=config.size_multiple,
            batch=config.tile_batch,
        )
        network = len(plan.ys) * len(plan.xs) * plan.tile_h * plan.tile_w
    else:
        network = side * side
    return LongestRequest(desc.id, side, network, measured[1], measured[0])


def derive(bench_path: Path = BENCH) -> Drain:
    bench = json.loads(bench_path.read_text())
    if int(bench["settings"]["threads"]) != 2:
        raise ValueError(
            f"{bench_path}: measured with --threads {bench['settings']['threads']}; the derivation "
            "assumes the default build's layout (2: one intra-op thread per step instance)"
        )
    per_pixel = seconds_per_pixel(bench)
    limits = _build_limits()
    image_models = [d for d in descriptors.MODELS if not d.window]
    missing = [d.id for d in image_models if d.id not in per_pixel]
    if missing:
        raise ValueError(f"{bench_path}: no served measurement of {', '.join(missing)}")
    longest = tuple(longest_request(d, limits, per_pixel[d.id]) for d in image_models)
    worst = max(r.seconds for r in longest)
    exit_timeout = int(math.ceil((worst + STOP_S) / 10) * 10)
    return Drain(longest, exit_timeout, PRESTOP_S + exit_timeout + KILL_MARGIN_S)


def deployed(path: Path = DEPLOYMENT) -> dict[str, int]:
    """exit timeout, grace period and preStop sleep as k8s/base/deployment.yaml sets them."""
    import yaml

    dep = yaml.safe_load(path.read_text())
    pod = dep["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "triton"]
    (exit_timeout,) = [int(a.split("=", 1)[1]) for a in server["args"] if a.startswith("--exit-timeout-secs=")]
    sleep = server["lifecycle"]["preStop"]["exec"]["command"]
    return {
        "exit_timeout_s": exit_timeout,
        "grace_s": int(pod["terminationGracePeriodSeconds"]),
        "prestop_s": int(sleep[1]) if sleep[0] == "sleep" else -1,
    }


def mismatches(drain: Drain, manifest: dict[str, int]) -> list[str]:
    want = {"exit_timeout_s": drain.exit_timeout_s, "grace_s": drain.grace_s, "prestop_s": PRESTOP_S}
    return [
        f"{k}: deployment.yaml has {manifest[k]}, the derivation gives {v}" for k, v in want.items() if manifest[k] != v
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if k8s/base/deployment.yaml disagrees")
    args = ap.parse_args(argv)
    drain = derive()
    if args.check:
        bad = mismatches(drain, deployed())
        for line in bad:
            print(f"k8s/base/deployment.yaml: {line} (python -m stylize_k8s.drain)", file=sys.stderr)
        return 1 if bad else 0
    print(f"{'model':18} {'input':>11} {'network px':>11} {'us/px':>7} {'(at)':>6} {'longest s':>10}")
    for r in drain.longest:
        print(
            f"{r.model:18} {r.input_side:>5}x{r.input_side:<5} {r.network_pixels:>11} "
            f"{r.seconds_per_pixel * 1e6:7.2f} {r.measured_at:>5}² {r.seconds:10.0f}"
        )
    print(f"\nlongest request: {drain.worst.model} {drain.worst.seconds:.0f} s (x{SLOWDOWN:g} included)")
    print(f"--exit-timeout-secs={drain.exit_timeout_s}  (longest + {STOP_S} s to unload, rounded up to 10 s)")
    print(
        f"terminationGracePeriodSeconds: {drain.grace_s}  (preStop {PRESTOP_S} s + exit timeout + "
        f"{KILL_MARGIN_S} s; ceiling {CEILING_S} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
