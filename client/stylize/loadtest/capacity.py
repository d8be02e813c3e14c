"""The capacity file, ``stylize-capacity/1``: what one pod serves per model, measured by the load test.

Written by :func:`capacity_document` from the results of a set with a ``[capacity]`` table (``stylize loadtest
capacity --serve`` -> ``loadtest/results/capacity.json``), read by :func:`load_results` for the Kubernetes capacity
plan (``python -m stylize_k8s.plan``) and its HPA simulator (``python -m stylize_k8s.simulate``). Nothing here
invents a number::

    {
      "format": "stylize-capacity/1",
      "measured": "2026-11-22T10:00:00Z",                 # when
      "source": "perf_analyzer 2.51.0, gRPC, ...",        # how: tool, protocol, input, anything needed to redo it
      "pod": {"kind": "cpu", "cpu": "4", "memory": "16Gi", "node": "..."},   # the pod the numbers are per
      "slo": {"latency_ms": 1000, "percentile": 95},      # the latency target the plan is for
      "startup_s": 62.0,                                  # pod start -> ready (model load + warm-up), measured
      "models": {
        "<model id from client/stylize/contract/descriptors.py>": {
          "input": "64x64 PNG",
          "points": [                                     # one per perf_analyzer concurrency, ascending
            {"concurrency": 1, "throughput_rps": 3.1, "p50_ms": 320.0, "p95_ms": 335.0,
             "queue_us": 40, "compute_us": 310000},       # queue/compute: server-side per request (optional)
            ...
          ]
        }
      }
    }

Per model this gives: ``service_s`` (p50 at the lowest concurrency: a request alone), ``saturation_rps`` (the highest
throughput measured), ``slo_rps`` (the highest throughput whose p<percentile> latency meets the SLO), and the
parallelism of a pod ``c = round(saturation_rps * service_s)`` (Little's law at saturation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from .runner import RunResult
    from .scenarios import ScenarioSet

FORMAT = "stylize-capacity/1"


# ---------------------------------------------------------------------------------------------------------------
# Writer: the load test's results -> the capacity document
# ---------------------------------------------------------------------------------------------------------------


class CapacityError(ValueError):
    """The run does not have what the capacity file needs (ensemble concurrency sweeps, start-up time)."""


def capacity_document(run_result: RunResult, scenario_set: ScenarioSet) -> dict[str, Any]:
    """The ``stylize-capacity/1`` document from the results of a set that has a [capacity] table."""
    if scenario_set.capacity is None:
        raise CapacityError(f"set {scenario_set.name} has no [capacity] table")
    models: dict[str, Any] = {}
    for r in run_result.results:
        sc = r.scenario
        if sc.set != scenario_set.name:
            continue
        if sc.variant != "ensemble" or sc.mode != "concurrency":
            raise CapacityError(f"{sc.name}: capacity scenarios are client-facing ensembles under a concurrency sweep")
        if sc.model in models:
            raise CapacityError(f"{sc.name}: a second capacity scenario for {sc.model}")
        points = []
        for lv in sorted(r.ok_levels, key=lambda lv: lv.value):
            p = {
                "concurrency": int(lv.value),
                "throughput_rps": round(lv.requests_per_s, 4),
                "p50_ms": round(lv.p50_ms, 2),
                "p95_ms": round(lv.p95_ms, 2),
            }
            if lv.queue_us is not None and lv.busy_us:
                p["queue_us"] = round(lv.queue_us, 1)
                p["compute_us"] = round(lv.busy_us, 1)
            points.append(p)
        if not points:
            raise CapacityError(f"{sc.name}: no successful level to take capacity from ({'; '.join(r.errors)})")
        models[sc.model] = {"input": sc.input_label, "points": points}
    if not models:
        raise CapacityError(f"no results of set {scenario_set.name} in this run")
    if run_result.startup_s is None:
        raise CapacityError(
            "the capacity plan needs the measured server start-up time: run with --serve "
            "(the load test starts the server and times it)"
        )
    m = run_result.machine
    return {
        "format": FORMAT,
        "measured": run_result.started,
        "source": (
            f"{run_result.versions['perf_analyzer']} against Triton {run_result.versions['triton']} over "
            f"{'HTTP' if run_result.protocol == 'http' else 'gRPC'} "
            f"({run_result.url}); real photo crops as encoded images (--input-data); one perf_analyzer run "
            f"per concurrency level; stylize {run_result.versions['stylize']}; "
            f"scenario set loadtest/scenarios/{scenario_set.path.name}; command: {run_result.command}"
        ),
        "pod": {
            "kind": "cpu",
            "cpu": str(m["cores"]),
            "memory": f"{m['memory_gib']}Gi",
            "node": f"{m['cpu']} ({m['cores']} cores, shared with other work: load average "
            f"{run_result.load_average.get('before')} -> {run_result.load_average.get('after')})",
        },
        "slo": {"latency_ms": scenario_set.capacity.slo_latency_ms, "percentile": scenario_set.capacity.percentile},
        "startup_s": round(run_result.startup_s, 1),
        "models": models,
    }


# ---------------------------------------------------------------------------------------------------------------
# Reader: the capacity document -> per-pod capacity per model
# ---------------------------------------------------------------------------------------------------------------


class CapacityInputError(ValueError):
    """The load-test results are missing, malformed or do not cover what was asked."""


@dataclass(frozen=True)
class Point:
    concurrency: int
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    queue_us: float | None = None
    compute_us: float | None = None


@dataclass(frozen=True)
class ModelCapacity:
    """What one pod does for one model, derived from the measured points."""

    model: str
    input: str
    points: tuple[Point, ...]
    slo_latency_ms: float
    slo_percentile: int

    def _latency(self, p: Point) -> float:
        return p.p95_ms if self.slo_percentile == 95 else p.p50_ms

    @property
    def service_s(self) -> float:
        return self.points[0].p50_ms / 1000.0

    @property
    def service_p95_s(self) -> float:
        return self.points[0].p95_ms / 1000.0

    @property
    def saturation_rps(self) -> float:
        return max(p.throughput_rps for p in self.points)

    @property
    def slo_point(self) -> Point | None:
        ok = [p for p in self.points if self._latency(p) <= self.slo_latency_ms]
        return max(ok, key=lambda p: p.throughput_rps) if ok else None

    @property
    def slo_rps(self) -> float:
        p = self.slo_point
        return p.throughput_rps if p else 0.0

    @property
    def parallelism(self) -> int:
        return max(1, round(self.saturation_rps * self.service_s))

    @property
    def measured_queue_ratio_at_slo(self) -> float | None:
        """Server-side queue/compute at the highest throughput that meets the SLO (if the points carry it)."""
        p = self.slo_point
        if p is None or p.queue_us is None or not p.compute_us:
            return None
        return p.queue_us / p.compute_us


@dataclass(frozen=True)
class CapacityResults:
    measured: str
    source: str
    pod: Mapping[str, object]
    slo_latency_ms: float
    slo_percentile: int
    startup_s: float | None
    models: Mapping[str, ModelCapacity]

    @property
    def pod_kind(self) -> str:
        return str(self.pod.get("kind", "cpu"))


def load_results(path: Path | str, *, known_models: Iterable[str] | None = None) -> CapacityResults:
    """Read and check the load-test results. Refuses anything incomplete: no number is ever made up here."""
    path = Path(path)
    if not path.is_file():
        raise CapacityInputError(
            f"{path}: no load-test results. Run the load test first (it writes this file); "
            "the capacity plan is computed only from measured numbers."
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CapacityInputError(f"{path}: not JSON ({e})") from None
    if raw.get("format") != FORMAT:
        raise CapacityInputError(f"{path}: format must be {FORMAT!r}, got {raw.get('format')!r}")
    for key in ("measured", "source", "pod", "slo", "models"):
        if not raw.get(key):
            raise CapacityInputError(f"{path}: missing {key!r}")
    slo = raw["slo"]
    percentile = int(slo.get("percentile", 95))
    if percentile not in (50, 95):
        raise CapacityInputError(f"{path}: slo.percentile must be 50 or 95 (what perf_analyzer's points carry)")
    latency = float(slo["latency_ms"])
    known = set(known_models) if known_models is not None else None
    models: dict[str, ModelCapacity] = {}
    for name, m in raw["models"].items():
        if known is not None and name not in known:
            raise CapacityInputError(f"{path}: unknown model {name!r} (not in the descriptors)")
        try:
            points = tuple(sorted((Point(**p) for p in m["points"]), key=lambda p: p.concurrency))
        except (KeyError, TypeError) as e:
            raise CapacityInputError(f"{path}: model {name!r}: bad points ({e})") from None
        if not points:
            raise CapacityInputError(f"{path}: model {name!r}: no points")
        for p in points:
            if p.throughput_rps <= 0 or p.p50_ms <= 0 or p.p95_ms < p.p50_ms:
                raise CapacityInputError(f"{path}: model {name!r}: implausible point {p}")
        models[name] = ModelCapacity(name, str(m.get("input", "")), points, latency, percentile)
    startup = raw.get("startup_s")
    return CapacityResults(
        str(raw["measured"]),
        str(raw["source"]),
        raw["pod"],
        latency,
        percentile,
        float(startup) if startup is not None else None,
        models,
    )


__all__ = [
    "FORMAT",
    "CapacityError",
    "capacity_document",
    "CapacityInputError",
    "Point",
    "ModelCapacity",
    "CapacityResults",
    "load_results",
]
