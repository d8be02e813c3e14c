"""Helpers of the k8s tests: render kustomizations, find objects and flags in them (the k8s tools are the installed
package stylize_k8s: the tests import it)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import yaml
from stylize_k8s import kubectl  # noqa: F401  (the tests' kubectl: the venv's first)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"

# The Kubernetes versions every rendered object is validated against (kubernetes-validate's bundled OpenAPI
# schemas, strict = unknown fields rejected): the oldest release these manifests support and the newest bundled.
KUBERNETES_VERSIONS = ("1.32", "1.37")

OVERLAYS = ("overlays/cpu", "overlays/gpu", "overlays/cpu-objectstore")
EXTRAS = ("monitoring", "loadtest")


@functools.lru_cache(maxsize=None)
def render(kustomization: str) -> tuple[dict, ...]:
    """`kubectl kustomize k8s/<kustomization>` as a tuple of objects (cached: rendering is the slow part)."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / kustomization)], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {kustomization} failed:\n{out.stderr}")
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def one(objects: tuple[dict, ...], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def server_container(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "triton")


def flag(args: list[str], name: str) -> list[str]:
    """Values of a `--name=value` flag (all occurrences)."""
    prefix = f"--{name}="
    return [a[len(prefix) :] for a in args if a.startswith(prefix)]


def quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for u in sorted(units, key=len, reverse=True):
        if q.endswith(u):
            return int(float(q[: -len(u)]) * units[u])
    return int(q)


def strictify(schema):
    """additionalProperties: false on every object schema that lists properties (strict field validation)."""
    if isinstance(schema, dict):
        out = {k: strictify(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strictify(v) for v in schema]
    return schema


# Load-test results written here as test input (a made-up pod, not a measurement): they exercise the simulator and
# the plan generator.
TEST_CAPACITY_RESULTS = {
    "format": "stylize-capacity/1",
    "measured": "test input",
    "source": "written by tests/k8s/test_simulator.py",
    "pod": {"kind": "cpu", "cpu": "4", "memory": "16Gi"},
    "slo": {"latency_ms": 1000, "percentile": 95},
    "startup_s": 60,
    "models": {
        "esrgan_x4": {
            "input": "64x64 PNG",
            "points": [
                {
                    "concurrency": 1,
                    "throughput_rps": 4.0,
                    "p50_ms": 250,
                    "p95_ms": 270,
                    "queue_us": 50,
                    "compute_us": 245000,
                },
                {
                    "concurrency": 2,
                    "throughput_rps": 6.0,
                    "p50_ms": 330,
                    "p95_ms": 400,
                    "queue_us": 90000,
                    "compute_us": 240000,
                },
                {
                    "concurrency": 4,
                    "throughput_rps": 7.5,
                    "p50_ms": 530,
                    "p95_ms": 700,
                    "queue_us": 280000,
                    "compute_us": 250000,
                },
                {
                    "concurrency": 8,
                    "throughput_rps": 8.0,
                    "p50_ms": 1000,
                    "p95_ms": 1200,
                    "queue_us": 750000,
                    "compute_us": 250000,
                },
            ],
        },
        "animevideo_x4": {
            "input": "64x64 PNG",
            "points": [
                {"concurrency": 1, "throughput_rps": 40, "p50_ms": 25, "p95_ms": 30},
                {"concurrency": 4, "throughput_rps": 90, "p50_ms": 44, "p95_ms": 60},
            ],
        },
    },
}
