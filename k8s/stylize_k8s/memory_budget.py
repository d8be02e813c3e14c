"""The CPU pod's memory, as a worst case under the limits (issue 13 #4), and the memory budget that makes it one.

    python -m stylize_k8s.memory_budget           # the worst case, term by term, and the largest image per model
    python -m stylize_k8s.memory_budget --check   # exit 1 unless the CPU pod's memory limit holds it

The terms (each from a measurement or a manifest, nothing typed here):

* the idle server: tritonserver and every stub with its compiled network, PSS (a cgroup charges each shared page
  once): ``k8s/capacity/server-memory.json``, by ``python -m stylize.loadtest.experiments.server_memory --out``;
* what every stub keeps after its largest calls (OpenVINO keeps a network's peak): each network model at its
  ``max_request_pixels``, each image step's network at one tile (untiled: at ``max_side``):
  ``k8s/capacity/net-memory.json`` (``keeps_mib``), by ``python -m stylize.loadtest.experiments.net_memory --out``;
* the image steps' memory budget (``STYLIZE_MEMORY_BUDGET_MIB`` in ``overlays/cpu``): what images borrow, in sum, at
  any moment (stylize.engine.memory_budget refuses or delays what does not fit);
* ``/dev/shm``: the dshm emptyDir's sizeLimit (memory-backed, charged to the container);
* Triton's response cache: ``--cache-config`` of the base Deployment.

The check asks the limit to hold that sum with :data:`MARGIN` to spare (the lines are fits of two points each).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from stylize_k8s import K8S
from stylize_k8s.shm_usage import deployed_size_limit, deployment_container, quantity_bytes

SERVER_MEMORY = K8S / "capacity" / "server-memory.json"
NET_MEMORY = K8S / "capacity" / "net-memory.json"
DEPLOYMENT = K8S / "base" / "deployment.yaml"
CPU_RESOURCES = K8S / "overlays" / "cpu" / "resources.yaml"
MARGIN = 0.05
MIB = 1 << 20


@dataclass(frozen=True)
class Worst:
    idle_mib: float
    keeps_mib: float
    budget_mib: float
    shm_mib: float
    cache_mib: float
    limit_mib: float

    @property
    def total_mib(self) -> float:
        return self.idle_mib + self.keeps_mib + self.budget_mib + self.shm_mib + self.cache_mib

    @property
    def needed_mib(self) -> float:
        return self.total_mib * (1 + MARGIN)

    @property
    def largest_budget_mib(self) -> float:
        """The largest budget the limit would hold, all else equal."""
        return self.limit_mib / (1 + MARGIN) - (self.total_mib - self.budget_mib)


def worst_case() -> Worst:
    from stylize.engine.memory_budget import BUDGET_ENV

    server = json.loads(SERVER_MEMORY.read_text())
    nets = json.loads(NET_MEMORY.read_text())
    _, triton = deployment_container(DEPLOYMENT)
    (cache,) = [a.split("size=", 1)[1] for a in triton["args"] if a.startswith("--cache-config=")]
    _, cpu = deployment_container(CPU_RESOURCES)  # the overlay's patch of the same container
    env = {e["name"]: e.get("value") for e in cpu.get("env", [])}
    if BUDGET_ENV not in env:
        raise SystemExit(
            f"{CPU_RESOURCES}: the triton container sets no {BUDGET_ENV}: without a memory budget the "
            "worst case is every image at its limit at once "
            f"(+{nets['worst_case_without_budget_mib']:,.0f} MiB)"
        )
    return Worst(
        idle_mib=server["idle"]["pss_mib"],
        keeps_mib=nets["keeps_mib"],
        budget_mib=float(env[BUDGET_ENV]),
        shm_mib=deployed_size_limit(DEPLOYMENT) / MIB,
        cache_mib=quantity_bytes(cache) / MIB,
        limit_mib=quantity_bytes(cpu["resources"]["limits"]["memory"]) / MIB,
    )


def problems(w: Worst) -> list[str]:
    if w.limit_mib >= w.needed_mib:
        return []
    return [
        f"{CPU_RESOURCES}: memory limit {w.limit_mib:,.0f} MiB is below the worst case {w.total_mib:,.0f} MiB "
        f"+ {MARGIN:.0%} = {w.needed_mib:,.0f} MiB (python -m stylize_k8s.memory_budget); the budget it would "
        f"hold is {w.largest_budget_mib:,.0f} MiB"
    ]


def largest_images(budget_mib: float) -> dict[str, int]:
    """Per image model: the most (effective) output pixels one image may have to fit the budget alone."""
    from stylize.engine.memory_budget import COSTS

    return {m: max(0, int((budget_mib - c.fixed_mib) * 1024 / c.kib_per_output_pixel)) for m, c in COSTS.items()}


def report(w: Worst) -> str:
    lines = [
        f"idle server (PSS, {SERVER_MEMORY.name})            {w.idle_mib:9,.0f} MiB",
        f"what the stubs keep ({NET_MEMORY.name} keeps_mib)   {w.keeps_mib:9,.0f} MiB",
        f"image steps' memory budget                        {w.budget_mib:9,.0f} MiB",
        f"/dev/shm (dshm sizeLimit)                         {w.shm_mib:9,.0f} MiB",
        f"response cache (--cache-config)                   {w.cache_mib:9,.0f} MiB",
        f"worst case                                        {w.total_mib:9,.0f} MiB "
        f"(+{MARGIN:.0%}: {w.needed_mib:,.0f} MiB)",
        f"CPU pod memory limit                              {w.limit_mib:9,.0f} MiB",
        "largest image one request may bring, alone in the budget (output pixels):",
    ]
    lines += [f"  {m:16s} {px / 1e6:8.1f} MP" for m, px in largest_images(w.budget_mib).items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 unless the CPU pod's limit holds the worst case")
    args = ap.parse_args(argv)
    w = worst_case()
    print(report(w))
    found = problems(w)
    for p in found:
        print(p, file=sys.stderr)
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
