"""The HPA metric, computed from two scrapes of Triton's /metrics: ours against Triton's example rule.

Triton's Kubernetes examples (server repo, ``deploy/k8s-onprem/values.yaml``) scale on::

    avg(delta(nv_inference_queue_duration_us[30s]) / (1 + delta(nv_inference_request_success[30s]))) by (pod)

an *unweighted* mean, over every model series of a pod, of each model's mean queue time per request. A model that
is loaded but idle contributes 0 to the mean, a model with 3 requests weighs as much as one with 3000, and the ``1 +``
shrinks every low-traffic model further; in a repository of 27 models where one model is saturated, the pod looks
almost idle. Ensembles add a second distortion to any sum over "all models": an ensemble's series repeat the compute
time of its composing models (but not their queue time), so summing them double-counts compute.

Ours (``k8s/monitoring/prometheus-adapter/rules.yaml``), per pod::

    clamp_max(sum(rate(nv_inference_queue_duration_us{model=~<composing models>}[1m]))
      / sum(rate(nv_inference_request_duration_us{model=~<entry models>}[1m])), 1)

the share of the clients' request time spent queued, in any model (python step, network, a network called from the
python step through BLS), i.e. weighted by each request's real time. The entry models are those a client request
enters through: the image ensembles and the networks clients call with raw frames (generate.entry_models); the
formulas below take them as ``clients``. Compute-time sums cannot be used as the
denominator: an ensemble repeats its steps' compute, and a BLS caller counts its callee's queue and compute as its
own compute. queue/compute = share / (1 - share). Same idea in
time units: queue time summed over the composing models / requests of the client-facing ensembles = the mean time a
client request spent queued, over all its steps.

``python -m stylize_k8s.queue_metric t0.prom t1.prom --seconds 10`` prints all of them for two real scrapes
(tests/k8s/data holds a pair captured from a real Triton 2.51.0 by capture_queue_metrics.py).
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

QUEUE = "nv_inference_queue_duration_us"
COMPUTE = "nv_inference_compute_infer_duration_us"
SUCCESS = "nv_inference_request_success"
DURATION = "nv_inference_request_duration_us"

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = tuple[tuple[str, str], ...]


class MetricsFormatError(ValueError):
    """A line of the Prometheus text exposition format could not be read."""


@dataclass(frozen=True)
class Scrape:
    """Samples of one scrape: {(metric name, sorted labels): value}, plus the metric families' declared types."""

    samples: Mapping[tuple[str, Labels], float]
    types: Mapping[str, str]

    def names(self) -> set[str]:
        return {name for name, _ in self.samples} | set(self.types)

    def per_model(self, name: str) -> dict[str, float]:
        """{model: value} of one per-model metric (summed over versions)."""
        out: dict[str, float] = {}
        for (n, labels), v in self.samples.items():
            if n == name:
                model = dict(labels).get("model")
                if model is not None:
                    out[model] = out.get(model, 0.0) + v
        return out


def parse(text: str) -> Scrape:
    """Parse the Prometheus text format (what Triton serves on :8002/metrics)."""
    samples: dict[tuple[str, Labels], float] = {}
    types: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise MetricsFormatError(f"line {lineno}: {line!r}")
        labels = tuple(sorted(_LABEL.findall(m.group("labels") or "")))
        try:
            value = float(m.group("value"))
        except ValueError:
            raise MetricsFormatError(f"line {lineno}: bad value in {line!r}") from None
        samples[(m.group("name"), labels)] = value
    return Scrape(samples=samples, types=types)


def rates(t0: Scrape, t1: Scrape, name: str, seconds: float) -> dict[str, float]:
    """Per-model per-second increase of a counter between two scrapes (what PromQL rate() gives for them)."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    before, after = t0.per_model(name), t1.per_model(name)
    return {m: (after[m] - before.get(m, 0.0)) / seconds for m in after}


@dataclass(frozen=True)
class ModelRates:
    """Per-second rates of one model: times in microseconds per second, requests per second."""

    queue_us: float
    compute_us: float
    requests: float
    duration_us: float = 0.0  # end-to-end request time (for an ensemble: the client's request)


def model_rates(t0: Scrape, t1: Scrape, seconds: float) -> dict[str, ModelRates]:
    q, c, s, d = (rates(t0, t1, n, seconds) for n in (QUEUE, COMPUTE, SUCCESS, DURATION))
    return {
        m: ModelRates(q.get(m, 0.0), c.get(m, 0.0), s.get(m, 0.0), d.get(m, 0.0))
        for m in sorted(set(q) | set(c) | set(s))
    }


# ---- the formulas (one pod's models in, one number out) ---------------------------------------------------------


def upstream_avg_queue_us(models: Mapping[str, ModelRates], *, window_s: float = 30.0) -> float:
    """Triton's example rule: avg over model series of delta(queue[w]) / (1 + delta(success[w]))."""
    if not models:
        return 0.0
    per_model = [r.queue_us * window_s / (1.0 + r.requests * window_s) for r in models.values()]
    return sum(per_model) / len(per_model)


def _sum(models: Mapping[str, ModelRates], names: Iterable[str], attr: str) -> float:
    names = set(names)
    return sum(getattr(r, attr) for m, r in models.items() if m in names)


def queue_share(models: Mapping[str, ModelRates], composing: Iterable[str], clients: Iterable[str]) -> float:
    """The HPA metric: queue time of the composing models / end-to-end time of the client requests (the entry
    models). Same clamps as the PromQL (denominator >= 1 us/s, result <= 1)."""
    return min(_sum(models, composing, "queue_us") / max(_sum(models, clients, "duration_us"), 1.0), 1.0)


def queue_compute_ratio(models: Mapping[str, ModelRates], composing: Iterable[str], clients: Iterable[str]) -> float:
    """Queue time / compute time of client requests, compute = end-to-end - queued (as the adapter rule)."""
    composing = list(composing)
    q = _sum(models, composing, "queue_us")
    return q / max(_sum(models, clients, "duration_us") - q, 1.0)


def naive_ratio(models: Mapping[str, ModelRates], names: Iterable[str] | None = None) -> float:
    """Sum of queue time over sum of compute time of the given series (default: every series). Wrong whenever a
    series' compute contains another's (ensembles repeat their steps; a BLS caller contains its callee)."""
    names = list(models) if names is None else list(names)
    return _sum(models, names, "queue_us") / max(_sum(models, names, "compute_us"), 1.0)


def queue_us_per_client_request(
    models: Mapping[str, ModelRates], composing: Iterable[str], clients: Iterable[str]
) -> float:
    """Mean queue time of a client request over all its steps: composing models' queue / ensembles' requests."""
    return _sum(models, composing, "queue_us") / max(_sum(models, clients, "requests"), 1e-3)


@dataclass(frozen=True)
class Comparison:
    upstream_avg_queue_us: float  # Triton's example rule
    queue_us_per_client_request: float  # what clients really waited in queues, on average
    share: float  # ours, the HPA metric: queued / end-to-end
    ratio: float  # ours as a ratio: queued / (end-to-end - queued)
    naive_ratio_all_series: float  # sum(queue) / sum(compute) over every series, ensembles included
    naive_ratio_composing: float  # the same over the composing models (double counts BLS callees)

    @property
    def upstream_underreports_by(self) -> float:
        """How many times larger the real per-request queue time is than what the example rule reports."""
        if self.upstream_avg_queue_us == 0:
            return math.inf if self.queue_us_per_client_request > 0 else 1.0
        return self.queue_us_per_client_request / self.upstream_avg_queue_us


def compare(
    models: Mapping[str, ModelRates], *, composing: Iterable[str], clients: Iterable[str], window_s: float = 30.0
) -> Comparison:
    composing, clients = list(composing), list(clients)
    return Comparison(
        upstream_avg_queue_us=upstream_avg_queue_us(models, window_s=window_s),
        queue_us_per_client_request=queue_us_per_client_request(models, composing, clients),
        share=queue_share(models, composing, clients),
        ratio=queue_compute_ratio(models, composing, clients),
        naive_ratio_all_series=naive_ratio(models),
        naive_ratio_composing=naive_ratio(models, composing),
    )


def _names_from_descriptors() -> tuple[list[str], list[str]]:
    from stylize_k8s import generate

    return generate.composing_models(), generate.client_models()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--seconds", type=float, required=True, help="time between the two scrapes")
    args = ap.parse_args(argv)
    t0, t1 = parse(args.before.read_text()), parse(args.after.read_text())
    models = model_rates(t0, t1, args.seconds)
    composing, clients = _names_from_descriptors()
    print(f"{'model':28} {'req/s':>9} {'queue ms/req':>13} {'compute ms/req':>15} {'total ms/req':>13}")
    for m, r in models.items():
        n = max(r.requests, 1e-9)
        tag = "" if m in composing else "  (ensemble: client requests)"
        print(
            f"{m:28} {r.requests:9.2f} {r.queue_us / n / 1000:13.2f} {r.compute_us / n / 1000:15.2f}"
            f" {r.duration_us / n / 1000:13.2f}{tag}"
        )
    c = compare(models, composing=composing, clients=clients)
    print(f"\nTriton example rule, avg queue per request   : {c.upstream_avg_queue_us / 1000:10.2f} ms")
    print(
        f"real queue per client request (all steps)    : {c.queue_us_per_client_request / 1000:10.2f} ms"
        f"  ({c.upstream_underreports_by:.1f}x what the example rule reports)"
    )
    print(f"HPA metric: queued share of client time     : {c.share:10.3f}  (ratio queue/compute {c.ratio:.3f})")
    print(f"naive sum(queue)/sum(compute), every series  : {c.naive_ratio_all_series:10.3f}")
    print(f"naive sum(queue)/sum(compute), composing     : {c.naive_ratio_composing:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
