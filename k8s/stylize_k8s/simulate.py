"""Replay traffic against the HPA-scaled Triton Deployment, with per-pod capacity from the load-test results.

    python -m stylize_k8s.simulate --results loadtest/results/capacity.json --overlay cpu \\
        --shape burst --rps 20 --mix esrgan_x4=0.5,animevideo_x4=0.5 --plot out/burst.png

Input: the load-test results, ``stylize-capacity/1`` (written by the load test, read and checked by
stylize.loadtest.capacity, which documents the format and what it gives per model: ``service_s``,
``saturation_rps``, ``slo_rps``, ``parallelism``; nothing here invents numbers).

Model of a pod (documented approximations, no randomness): requests are spread evenly over ready pods (gRPC clients
with round-robin over the headless Service); a pod is an M/M/c queue with the mix's mean service time, plus a fluid
backlog when the arrival rate exceeds what the ready pods serve. The HPA metric is what the prometheus-adapter rule
computes from queue and compute time over the last ``rate_window_s`` (the share q/(q+c) or the ratio q/c, after the
HPA's metric name), seen ``metric_lag_s`` late. The HPA is the
Kubernetes algorithm (pkg/controller/podautoscaler: replica_calculator.go calcPlainMetricReplicas, horizontal.go
stabilization and scaling policies): tolerance 0.1, sync every 15 s, pending pods ignored, pods without metrics
counted as 0 on scale-up and as the target on scale-down (left out at exactly the target), no recommendation history
when the simulation starts. A new pod is Pending for ``schedule_s`` (scheduling, image
pull: an assumption of the cluster), then loads its models for ``startup_s`` (measured), becomes ready on the next
startup-probe period, and has metrics ``metrics_delay_s`` later (scrape + rate window).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from stylize.loadtest.capacity import CapacityInputError, CapacityResults, ModelCapacity, load_results

from stylize_k8s import K8S, kubectl

# ---------------------------------------------------------------------------------------------------------------
# Queueing model of one pod
# ---------------------------------------------------------------------------------------------------------------


def erlang_c(c: int, a: float) -> float:
    """Probability that a request waits in an M/M/c queue with offered load a (Erlangs), a < c."""
    if a <= 0:
        return 0.0
    if a >= c:
        return 1.0
    b = 1.0  # Erlang B by recursion (stable for large c)
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1 - b))


@dataclass(frozen=True)
class Mix:
    """The traffic mix as one pod sees it: shares of requests per model."""

    shares: Mapping[str, float]
    capacity: Mapping[str, ModelCapacity]

    def __post_init__(self) -> None:
        missing = [m for m in self.shares if m not in self.capacity]
        if missing:
            raise CapacityInputError(f"no load-test numbers for {', '.join(missing)}")
        total = sum(self.shares.values())
        if total <= 0 or any(v < 0 for v in self.shares.values()):
            raise ValueError("mix shares must be >= 0 and not all 0")
        object.__setattr__(self, "shares", {m: v / total for m, v in self.shares.items()})

    @property
    def work_per_request(self) -> float:
        """Pod-seconds of a pod's capacity that one request of the mix uses."""
        return sum(s / self.capacity[m].saturation_rps for m, s in self.shares.items())

    @property
    def pod_rps(self) -> float:
        """Saturation throughput of one pod for this mix."""
        return 1.0 / self.work_per_request

    @property
    def pod_slo_rps(self) -> float:
        """Throughput of one pod for this mix with every model at its SLO throughput (harmonic, by share)."""
        if any(self.capacity[m].slo_rps <= 0 for m in self.shares):
            return 0.0
        return 1.0 / sum(s / self.capacity[m].slo_rps for m, s in self.shares.items())

    @property
    def service_s(self) -> float:
        return sum(s * self.capacity[m].service_s for m, s in self.shares.items())

    @property
    def parallelism(self) -> int:
        """Work-weighted parallelism of a pod for this mix."""
        w = {m: s / self.capacity[m].saturation_rps for m, s in self.shares.items()}
        return max(1, round(sum(w[m] * self.capacity[m].parallelism for m in w) / sum(w.values())))

    def wait(self, utilization: float) -> tuple[float, float]:
        """(mean queue wait s, probability of waiting) of a pod at this utilization (< 1)."""
        c = self.parallelism
        a = c * utilization
        pw = erlang_c(c, a)
        return pw * self.service_s / (c - a), pw

    def wait_tail(self, utilization: float, threshold_s: float) -> float:
        """P(queue wait > threshold) at this utilization (M/M/c: exponential tail)."""
        if threshold_s < 0:
            return 1.0
        c = self.parallelism
        a = c * utilization
        return erlang_c(c, a) * math.exp(-(c - a) * threshold_s / self.service_s)

    def utilization_for_ratio(self, ratio: float) -> float:
        """The utilization at which the HPA metric (mean wait / mean service) equals ``ratio`` (bisection)."""
        lo, hi = 0.0, 0.999999
        for _ in range(100):
            mid = (lo + hi) / 2
            if self.wait(mid)[0] / self.service_s < ratio:
                lo = mid
            else:
                hi = mid
        return lo


# ---------------------------------------------------------------------------------------------------------------
# The HorizontalPodAutoscaler (Kubernetes' algorithm)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    type: str  # Pods | Percent
    value: int
    period_s: int


@dataclass(frozen=True)
class Rules:
    stabilization_s: int
    policies: tuple[Policy, ...]
    select: str = "Max"  # Max | Min | Disabled


@dataclass(frozen=True)
class HpaSpec:
    min_replicas: int
    max_replicas: int
    target: float  # the Pods metric's averageValue
    scale_up: Rules
    scale_down: Rules
    tolerance: float = 0.1
    sync_s: int = 15
    metric: str = "triton_queue_share"  # the adapter metric's name: *_share or *_ratio (see metric_kind)

    @property
    def metric_kind(self) -> str:
        """share: queue / (queue + compute); ratio: queue / compute (stylize_k8s.generate)."""
        return "share" if self.metric.endswith("_share") else "ratio"

    def ratio_at_target(self) -> float:
        """The queue/compute ratio the target stands for."""
        return self.target / (1.0 - self.target) if self.metric_kind == "share" else self.target

    def target_for_ratio(self, ratio: float) -> float:
        """The target value, in this metric's unit, for a queue/compute ratio."""
        return ratio / (1.0 + ratio) if self.metric_kind == "share" else ratio

    @classmethod
    def from_manifest(cls, hpa: Mapping) -> "HpaSpec":
        """From a rendered autoscaling/v2 HorizontalPodAutoscaler (one Pods metric, AverageValue target)."""
        spec = hpa["spec"]
        (metric,) = spec["metrics"]
        target = parse_quantity(str(metric["pods"]["target"]["averageValue"]))
        # Kubernetes defaults for an unset behaviour (autoscaling/v2 API docs)
        up_default = {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 15},
            ],
        }
        down_default = {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        }
        behavior = spec.get("behavior", {})

        def rules(raw: Mapping | None, default: Mapping) -> Rules:
            raw = {**default, **(raw or {})}
            return Rules(
                int(raw["stabilizationWindowSeconds"]),
                tuple(Policy(p["type"], int(p["value"]), int(p["periodSeconds"])) for p in raw["policies"]),
                raw.get("selectPolicy", "Max"),
            )

        return cls(
            int(spec.get("minReplicas", 1)),
            int(spec["maxReplicas"]),
            target,
            rules(behavior.get("scaleUp"), up_default),
            rules(behavior.get("scaleDown"), down_default),
            metric=metric["pods"]["metric"]["name"],
        )


def parse_quantity(q: str) -> float:
    """A Kubernetes quantity as a float ("1", "500m", "1.5", "2k")."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    if q and q[-1] in suffixes:
        return float(q[:-1]) * suffixes[q[-1]]
    return float(q)


def _usage_ratio(values: Sequence[int], target: int) -> float:
    """GetMetricUsageRatio: integer mean of milli-values over the target milli-value, as float64."""
    return float(sum(values) // len(values)) / float(target)


def replica_count(
    *, current: int, metrics: Mapping[str, float], missing: int, unready: int, target: float, tolerance: float = 0.1
) -> int:
    """calcPlainMetricReplicas: desired replicas from per-pod metric values (pods with metrics), the number of
    running pods without metrics (``missing``) and of pending pods (``unready``).

    Like the controller, it works on milli-values (the custom metrics API's and the target's MilliValue()), so the
    rounding matches: e.g. a usage ratio of exactly 1.1 is outside a 0.1 tolerance in float64.
    """
    if not metrics:
        raise ValueError("did not receive metrics for any ready pods")
    values = [round(v * 1000) for v in metrics.values()]
    target_m = round(target * 1000)
    ready = len(values)
    usage_ratio = _usage_ratio(values, target_m)
    rebalance_unready = unready > 0 and usage_ratio > 1.0
    if not rebalance_unready and missing == 0:
        if abs(1.0 - usage_ratio) <= tolerance:
            return current
        return math.ceil(usage_ratio * ready)
    if missing and usage_ratio != 1.0:
        # scale-down: missing pods count as using exactly the target; scale-up: as using nothing; at exactly the
        # target neither (`else if usageRatio > 1.0` upstream), so the ratio stays 1.0 and the count stays
        values += [target_m if usage_ratio < 1.0 else 0] * missing
    if rebalance_unready:
        values += [0] * unready
    new_ratio = _usage_ratio(values, target_m)
    if (
        abs(1.0 - new_ratio) <= tolerance
        or (usage_ratio > 1.0 and new_ratio < 1.0)
        or (usage_ratio < 1.0 and new_ratio > 1.0)
    ):
        return current
    new_replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and new_replicas > current) or (new_ratio > 1.0 and new_replicas < current):
        return current
    return new_replicas


@dataclass
class HorizontalPodAutoscaler:
    """The controller's memory between syncs: recommendations (stabilization) and scale events (policies)."""

    spec: HpaSpec
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, replica change, signed)

    def stabilize(self, now: float, desired: int, current: int) -> int:
        up_cut = now - self.spec.scale_up.stabilization_s
        down_cut = now - self.spec.scale_down.stabilization_s
        up_rec = down_rec = desired
        for t, r in self.recommendations:
            if t > up_cut:
                up_rec = min(up_rec, r)
            if t > down_cut:
                down_rec = max(down_rec, r)
        keep_after = min(up_cut, down_cut)
        self.recommendations = [(t, r) for t, r in self.recommendations if t >= keep_after]
        self.recommendations.append((now, desired))
        return min(max(current, up_rec), down_rec)

    def _changes(self, now: float, period: int) -> tuple[int, int]:
        added = sum(c for t, c in self.events if c > 0 and t > now - period)
        removed = -sum(c for t, c in self.events if c < 0 and t > now - period)
        return added, removed

    def rate_limit(self, now: float, desired: int, current: int) -> int:
        s = self.spec
        if desired > current:
            rules = s.scale_up
            if rules.select == "Disabled":
                limit = current
            else:
                proposals = []
                for p in rules.policies:
                    added, removed = self._changes(now, p.period_s)
                    start = current - added + removed
                    proposals.append(start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100)))
                limit = min(proposals) if rules.select == "Min" else max(proposals)
            limit = max(limit, current)
            return min(desired, s.max_replicas, limit)
        if desired < current:
            rules = s.scale_down
            if rules.select == "Disabled":
                limit = current
            else:
                proposals = []
                for p in rules.policies:
                    added, removed = self._changes(now, p.period_s)
                    start = current - added + removed
                    proposals.append(start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100)))
                limit = max(proposals) if rules.select == "Min" else min(proposals)
            limit = min(limit, current)
            return max(desired, s.min_replicas, limit)
        return desired

    def sync(self, now: float, *, current: int, metrics: Mapping[str, float], missing: int, unready: int) -> int:
        """One reconcile: the new replica count of the Deployment."""
        if not metrics:
            return current  # no pod has metrics: the HPA reports an error and leaves the Deployment alone
        desired = replica_count(
            current=current,
            metrics=metrics,
            missing=missing,
            unready=unready,
            target=self.spec.target,
            tolerance=self.spec.tolerance,
        )
        desired = self.stabilize(now, desired, current)
        new = self.rate_limit(now, desired, current)
        new = min(max(new, self.spec.min_replicas), self.spec.max_replicas)
        if new != current:
            self.events.append((now, new - current))
            longest = max(p.period_s for p in self.spec.scale_up.policies + self.spec.scale_down.policies)
            self.events = [(t, c) for t, c in self.events if t > now - longest]
        return new


# ---------------------------------------------------------------------------------------------------------------
# Traffic shapes (requests per second over time)
# ---------------------------------------------------------------------------------------------------------------


def steady(rps: float) -> Callable[[float], float]:
    return lambda t: rps


def diurnal(peak_rps: float, trough_rps: float, period_s: float = 86_400.0) -> Callable[[float], float]:
    """Trough at t = 0, peak at half the period (a day compressed or not)."""
    return lambda t: trough_rps + (peak_rps - trough_rps) * (1 - math.cos(2 * math.pi * t / period_s)) / 2


def burst(base_rps: float, burst_rps: float, start_s: float, duration_s: float) -> Callable[[float], float]:
    return lambda t: burst_rps if start_s <= t < start_s + duration_s else base_rps


# ---------------------------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodTiming:
    startup_s: float  # model load + warm-up (measured)
    schedule_s: float = 30.0  # Pending: scheduling + image pull (assumption: image cached on the node)
    probe_period_s: float = 10.0  # startup probe period (k8s/base/deployment.yaml)
    metrics_delay_s: float = 30.0  # first scrape + a rate() window with two samples


@dataclass
class _Pod:
    created: float
    timing: PodTiming

    def phase(self, now: float) -> str:
        running_at = self.created + self.timing.schedule_s
        if now < running_at:
            return "pending"
        loaded = running_at + self.timing.startup_s
        ready_at = (
            running_at + math.ceil(self.timing.startup_s / self.timing.probe_period_s) * self.timing.probe_period_s
        )
        ready_at = max(ready_at, loaded)
        if now < ready_at:
            return "loading"
        if now < ready_at + self.timing.metrics_delay_s:
            return "ready-no-metrics"
        return "ready"


@dataclass
class Timeline:
    """One row per second."""

    t: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)  # the Deployment's spec.replicas (what the HPA set)
    ready: list[int] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)  # the HPA metric as last seen by the HPA
    wait_s: list[float] = field(default_factory=list)  # mean queue wait of a request arriving then
    violation: list[float] = field(default_factory=list)  # fraction of that second's requests over the SLO


@dataclass(frozen=True)
class Summary:
    requests: float
    slo_violation_fraction: float
    max_wait_s: float
    p_seconds_over_slo: float  # fraction of seconds in which more than 5 % of requests missed the SLO
    max_replicas: int
    pod_hours: float
    mean_replicas: float
    replica_changes_per_hour: float  # how often the HPA changed the count (flapping shows here)


@dataclass
class Simulation:
    mix: Mix
    hpa: HpaSpec
    timing: PodTiming
    slo_s: float
    rate_window_s: float = 60.0  # the adapter rule's rate() window
    metric_lag_s: float = 15.0  # scrape interval: what the HPA sees is this old
    initial_replicas: int | None = None

    def metric_of(self, queue: float, compute: float) -> float:
        """The HPA metric from queue and compute time summed over the rate window (as the adapter rule does)."""
        if self.hpa.metric_kind == "ratio":
            return queue / compute if compute > 0 else 0.0
        return queue / (queue + compute) if queue + compute > 0 else 0.0

    def steady_state_replicas(self, rps: float) -> int:
        """Pods the HPA settles on for a constant rate: utilization at which the metric equals the target."""
        u = self.mix.utilization_for_ratio(self.hpa.ratio_at_target())
        need = math.ceil(rps * self.mix.work_per_request / u) if rps > 0 else 0
        return min(max(need, self.hpa.min_replicas), self.hpa.max_replicas)

    def run(self, traffic: Callable[[float], float], duration_s: int) -> tuple[Timeline, Summary]:
        """Simulate ``duration_s`` seconds, starting from the steady state of the traffic at t = 0."""
        mix, hpa_spec, timing = self.mix, self.hpa, self.timing
        hpa = HorizontalPodAutoscaler(hpa_spec)
        start = self.initial_replicas or self.steady_state_replicas(traffic(0.0))
        # initial pods are long ready (created far in the past); the HPA starts with no recommendation history, as
        # the controller does for a new HPA or after a restart (horizontal.go keeps none across restarts, and
        # maybeInitScaleDownStabilizationWindow only defaults the window's length)
        pods = [_Pod(-1e9, timing) for _ in range(start)]
        replicas = start
        backlog = 0.0  # pod-seconds of queued work beyond the steady-state queue
        # per second: queue seconds and compute seconds of all requests; the history before t = 0 is the steady
        # state of traffic(0) on the initial pods, so the first rate windows are full
        warm = int(self.rate_window_s + self.metric_lag_s)
        rps0 = traffic(0.0)
        wait0 = mix.wait(min(rps0 * mix.work_per_request / start, 0.98))[0] if start else 0.0
        queue_hist: list[float] = [rps0 * wait0] * warm
        compute_hist: list[float] = [rps0 * mix.service_s] * warm
        seen_metric = self.metric_of(wait0, mix.service_s)
        tl = Timeline()
        total_req = violated = 0.0
        seconds_bad = 0
        u_cap = 0.98

        for sec in range(duration_s):
            now = float(sec)
            if sec % hpa_spec.sync_s == 0 and sec > 0:
                # the metric as the adapter serves it: rate window ending metric_lag_s ago
                end = warm + sec - int(self.metric_lag_s)
                begin = end - int(self.rate_window_s)
                seen_metric = self.metric_of(sum(queue_hist[begin:end]), sum(compute_hist[begin:end]))
                phases = [p.phase(now) for p in pods]
                with_metrics = {str(i): seen_metric for i, ph in enumerate(phases) if ph == "ready"}
                missing = sum(ph in ("loading", "ready-no-metrics") for ph in phases)
                unready = sum(ph == "pending" for ph in phases)
                new = hpa.sync(now, current=replicas, metrics=with_metrics, missing=missing, unready=unready)
                if new > replicas:
                    pods += [_Pod(now, timing) for _ in range(new - replicas)]
                elif new < replicas:
                    # ReplicaSet scale-down order: pending, then not ready, then the newest ready
                    order = {"pending": 0, "loading": 1, "ready-no-metrics": 2, "ready": 3}
                    pods.sort(key=lambda p: (order[p.phase(now)], -p.created))
                    pods = pods[replicas - new :]
                replicas = new

            rps = traffic(now)
            ready = sum(p.phase(now) in ("ready", "ready-no-metrics") for p in pods)
            work = rps * mix.work_per_request  # pod-seconds of work arriving per second
            if ready == 0:
                backlog += work
                wait, frac = math.inf, 1.0
            else:
                u = work / ready
                backlog = max(0.0, backlog + (work - ready))
                steady_wait, _ = mix.wait(min(u, u_cap))
                wait = steady_wait + backlog / ready
                frac = 0.0
                for m, share in mix.shares.items():
                    cap = mix.capacity[m]
                    threshold = self.slo_s - cap.service_p95_s - backlog / ready
                    frac += share * mix.wait_tail(min(u, u_cap), threshold)
            queue_hist.append(rps * (wait if math.isfinite(wait) else 0.0))
            compute_hist.append(rps * mix.service_s)
            total_req += rps
            violated += rps * frac
            seconds_bad += frac > 0.05
            tl.t.append(now)
            tl.rps.append(rps)
            tl.replicas.append(replicas)
            tl.ready.append(ready)
            tl.metric.append(seen_metric)
            tl.wait_s.append(wait)
            tl.violation.append(frac)

        finite = [w for w in tl.wait_s if math.isfinite(w)]
        summary = Summary(
            requests=total_req,
            slo_violation_fraction=violated / total_req if total_req else 0.0,
            max_wait_s=max(finite) if len(finite) == len(tl.wait_s) else math.inf,
            p_seconds_over_slo=seconds_bad / duration_s,
            max_replicas=max(tl.replicas),
            pod_hours=sum(tl.replicas) / 3600.0,
            mean_replicas=sum(tl.replicas) / duration_s,
            replica_changes_per_hour=sum(a != b for a, b in zip(tl.replicas, tl.replicas[1:])) * 3600 / duration_s,
        )
        return tl, summary


# ---------------------------------------------------------------------------------------------------------------
# Plots and command line
# ---------------------------------------------------------------------------------------------------------------


def plot(tl: Timeline, summary: Summary, *, title: str, path: Path, target: float, pod_rps: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = max(tl.t) > 3 * 3600
    x = [t / 3600 for t in tl.t] if hours else [t / 60 for t in tl.t]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(x, tl.rps, label="traffic (req/s)")
    axes[0].plot(x, [r * pod_rps for r in tl.ready], label="ready pods x saturation req/s per pod", alpha=0.7)
    axes[0].set_ylabel("req/s")
    axes[0].legend(loc="upper left")
    axes[1].step(x, tl.replicas, where="post", label="replicas (HPA)")
    axes[1].step(x, tl.ready, where="post", label="ready pods")
    axes[1].set_ylabel("pods")
    axes[1].legend(loc="upper left")
    ax = axes[2]
    ax.plot(x, [min(w, 600.0) for w in tl.wait_s], label="mean queue wait (s)")
    ax.plot(x, tl.metric, label=f"HPA metric (target {target:g})", alpha=0.7)
    ax.axhline(target, color="tab:orange", linestyle=":", linewidth=1)
    ax.set_yscale("symlog", linthresh=1.0)  # backlogs reach minutes while the target is about 1
    ax.set_ylim(bottom=0)
    ax.set_ylabel("s / ratio")
    ax2 = ax.twinx()
    ax2.fill_between(x, tl.violation, color="tab:red", alpha=0.25, label="requests over SLO (fraction)")
    ax2.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")
    axes[2].set_xlabel("hours" if hours else "minutes")
    fig.suptitle(
        f"{title}: {summary.slo_violation_fraction:.2%} of requests over the SLO, "
        f"max {summary.max_replicas} pods, {summary.pod_hours:.1f} pod-hours"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_hpa(overlay: str) -> HpaSpec:
    """The HPA of a kustomize overlay, as deployed (needs kubectl)."""
    import yaml

    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    (hpa,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "HorizontalPodAutoscaler"]
    return HpaSpec.from_manifest(hpa)


def parse_mix(text: str | None, results: CapacityResults) -> dict[str, float]:
    if not text:
        return {m: 1.0 for m in results.models}
    out = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        out[name.strip()] = float(share) if share else 1.0
    return out


SHAPES = ("steady", "diurnal", "burst")


def shape(name: str, rps: float, duration_s: int) -> Callable[[float], float]:
    """The three standard shapes around a peak of ``rps``."""
    if name == "steady":
        return steady(rps)
    if name == "diurnal":
        return diurnal(rps, rps / 5, period_s=duration_s)
    if name == "burst":
        return burst(rps / 4, rps, start_s=duration_s / 4, duration_s=duration_s / 4)
    raise ValueError(f"unknown shape {name!r}; one of {SHAPES}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, required=True, help="load-test results (stylize-capacity/1 JSON)")
    ap.add_argument("--overlay", default="cpu", help="k8s overlay whose HPA to simulate")
    ap.add_argument("--shape", choices=SHAPES, default="burst")
    ap.add_argument("--rps", type=float, required=True, help="peak requests per second")
    ap.add_argument("--duration", type=int, default=None, help="seconds (default: 2 h; diurnal: 24 h)")
    ap.add_argument("--mix", help="model=share,... (default: equal shares of every measured model)")
    ap.add_argument("--schedule-s", type=float, default=30.0, help="Pending time of a new pod (assumption)")
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    try:
        results = load_results(args.results)
        if results.startup_s is None:
            raise CapacityInputError(f"{args.results}: startup_s (measured pod start-up) is missing")
        mix = Mix(parse_mix(args.mix, results), results.models)
    except CapacityInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    duration = args.duration or (86_400 if args.shape == "diurnal" else 7_200)
    sim = Simulation(
        mix,
        render_hpa(args.overlay),
        PodTiming(results.startup_s, schedule_s=args.schedule_s),
        slo_s=results.slo_latency_ms / 1000,
    )
    tl, s = sim.run(shape(args.shape, args.rps, duration), duration)
    print(json.dumps(s.__dict__, indent=2))
    if args.plot:
        plot(
            tl, s, title=f"{args.shape} {args.rps:g} req/s", path=args.plot, target=sim.hpa.target, pod_rps=mix.pod_rps
        )
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
