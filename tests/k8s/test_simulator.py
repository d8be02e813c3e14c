"""The capacity simulator: its HPA is Kubernetes' algorithm, its queue is M/M/c, its input is checked.

The capacity numbers below are test inputs written here (a made-up pod), not measurements: they exercise the math.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from k8s_helpers import TEST_CAPACITY_RESULTS, one, render
from stylize_k8s import simulate as sim

pytestmark = pytest.mark.k8s

TEST_RESULTS = TEST_CAPACITY_RESULTS


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "capacity.json"
    path.write_text(json.dumps(TEST_RESULTS))
    return sim.load_results(path)


def _spec(**kw):
    """The deployed CPU behaviour; metric: the queue share with target 0.5 unless given."""
    up = sim.Rules(0, (sim.Policy("Percent", 100, 60), sim.Policy("Pods", 4, 60)), "Max")
    down = sim.Rules(600, (sim.Policy("Percent", 25, 120),), "Max")
    return sim.HpaSpec(
        **{
            "min_replicas": 2,
            "max_replicas": 20,
            "target": 0.5,
            "scale_up": up,
            "scale_down": down,
            "metric": "triton_queue_share",
            **kw,
        }
    )


def _ratio_spec(**kw):
    return _spec(**{"target": 1.0, "metric": "triton_queue_compute_ratio", **kw})


# ---- replica calculation: desired = ceil(current * metric / target) with tolerance and missing pods -------------


def _rc(values, target, current=None, missing=0, unready=0):
    return sim.replica_count(
        current=current if current is not None else len(values) + missing + unready,
        metrics={str(i): v for i, v in enumerate(values)},
        missing=missing,
        unready=unready,
        target=target,
    )


def test_replica_count_cases_of_the_kubernetes_tests():
    # replica_calculator_test.go: custom metric scale up 3 -> 4, scale down 5 -> 3, tolerance keeps 3
    assert _rc([20000, 10000, 30000], 15000) == 4
    assert _rc([12000, 12000, 12000, 12000, 12000], 20000) == 3
    assert _rc([20000, 21000, 21000], 20000) == 3


def test_replica_count_is_the_formula_outside_the_tolerance():
    rng = random.Random(5)
    for _ in range(2000):
        n = rng.randint(1, 30)
        target = rng.choice([0.5, 1.0, 2.0, 1000.0])
        values = [rng.randint(0, 3000) * target / 1000 for _ in range(n)]  # whole milli-units, as the API serves
        ratio = (sum(round(v * 1000) for v in values) // n) / round(target * 1000)
        expected = n if abs(1 - ratio) <= 0.1 else math.ceil(n * ratio)
        assert _rc(values, target) == expected


def test_tolerance_boundary():
    assert _rc([1.09] * 4, 1.0) == 4  # inside the tolerance
    assert _rc([1.1] * 4, 1.0) == 5  # float64: |1.0 - 1100/1000| = 0.10000000000000009 > 0.1, ceil(4.4)
    assert _rc([1.2] * 4, 1.0) == 5  # ceil(4.8)
    assert _rc([1.0004, 1.0004], 1.0) == 2  # sub-milli differences vanish (milli-values)
    assert _rc([0.85] * 10, 1.0) == 9  # ceil(8.5)


def test_missing_and_unready_pods():
    # scale-up: pods without metrics count as 0 -> 2 pods at 2x target + 2 loading = exactly the target: no change
    assert _rc([2.0, 2.0], 1.0, missing=2) == 4
    # ... at 3x: (6 + 0 + 0) / 4 = 1.5 -> ceil(1.5 * 4) = 6
    assert _rc([3.0, 3.0], 1.0, missing=2) == 6
    # scale-down: missing pods count as the target -> (0.2 + 0.2 + 1 + 1) / 4 = 0.6 -> 3 (not 1)
    assert _rc([0.2, 0.2], 1.0, missing=2) == 3
    # pending pods count as 0 on scale-up only
    assert _rc([2.0, 2.0], 1.0, unready=2) == 4
    assert _rc([0.5, 0.5], 1.0, unready=2, current=4) == 1  # ignored on scale-down: ceil(0.5 * 2)
    # a missing pod must not flip the direction: 1.05 avg over ready is within tolerance anyway
    assert _rc([1.05, 1.05], 1.0, missing=1) == 3


def test_missing_pods_at_exactly_the_target_are_left_out():
    """calcPlainMetricReplicas fills in pods without metrics only when the ratio is below (as the target) or above
    (as 0) 1.0. At exactly the target the ratio stays 1.0: no change, where filling them with 0 would halve the
    ratio and scale 4 pods (2 of them still loading) down to 2."""
    assert _rc([1.0, 1.0], 1.0, missing=2) == 4
    assert _rc([0.5, 0.5, 0.5], 0.5, missing=1) == 4


# ---- behaviour: stabilization windows and rate policies ----------------------------------------------------


def test_scale_up_policies_per_minute():
    hpa = sim.HorizontalPodAutoscaler(_ratio_spec())
    kw = dict(metrics={str(i): 10.0 for i in range(2)}, missing=0, unready=0)  # wants ceil(2 * 10) = 20
    assert hpa.sync(15, current=2, **kw) == 6  # max(100 % of 2 -> 4, 2 + 4 pods -> 6)
    assert hpa.sync(30, current=6, **kw) == 6  # still inside the 60 s period that added 4
    assert hpa.sync(60, current=6, **kw) == 6
    assert hpa.sync(90, current=6, **kw) == 12  # period restarted from 6: max(12, 10)
    assert hpa.sync(165, current=12, **kw) == 20  # max(24, 16) capped by maxReplicas


def test_scale_down_waits_for_the_stabilization_window_then_25_percent_per_2_minutes():
    hpa = sim.HorizontalPodAutoscaler(_ratio_spec())
    high = dict(metrics={str(i): 1.0 for i in range(16)}, missing=0, unready=0)
    assert hpa.sync(0, current=16, **high) == 16
    low = {str(i): 0.25 for i in range(16)}  # wants ceil(n * 0.25) every time
    t, replicas, history = 15, 16, []
    while t <= 1500:
        replicas = hpa.sync(t, current=replicas, metrics={k: 0.25 for k in list(low)[:replicas]}, missing=0, unready=0)
        history.append((t, replicas))
        t += 15
    first_drop = next(t for t, r in history if r < 16)
    assert first_drop >= 600  # the recommendation of 16 at t=0 holds the window (strictly after the cutoff)
    drops = [(t, r) for (t, r), (_, prev) in zip(history[1:], history) if r != prev]
    assert drops[0][1] == 12  # int(16 * 0.75)
    assert all(b[0] - a[0] >= 120 for a, b in zip(drops, drops[1:]))  # one step per policy period
    assert history[-1][1] == 2  # the metric is held at 0.25 per pod here, so it goes down to minReplicas


def test_the_scale_down_window_starts_empty(results):
    """A new HPA (or a restarted controller) has no recommendation history: its first sync may already scale down
    (rate-limited by the policies), not only after the 600 s window."""
    mix = sim.Mix({"esrgan_x4": 1}, results.models)
    s = sim.Simulation(mix, _spec(), sim.PodTiming(60), slo_s=1.0, initial_replicas=8)
    tl, _ = s.run(sim.steady(0.5 * mix.pod_rps), 600)  # load for 1 pod: the HPA wants fewer than 8 at once
    assert tl.replicas[0] == 8
    assert tl.replicas[15] == 6  # the first sync (t = 15 s): 25 % of 8 pods per 2 minutes


def test_scale_up_stabilization_takes_the_minimum():
    spec = _ratio_spec(scale_up=sim.Rules(60, (sim.Policy("Pods", 100, 15),), "Max"))
    hpa = sim.HorizontalPodAutoscaler(spec)
    one_pod = lambda v: dict(metrics={"0": v, "1": v}, missing=0, unready=0)  # noqa: E731
    assert hpa.sync(0, current=2, **one_pod(1.0)) == 2
    assert hpa.sync(15, current=2, **one_pod(5.0)) == 2  # a spike: min over the last 60 s is still 2
    assert hpa.sync(75, current=2, **one_pod(5.0)) == 10  # sustained past the window


def test_hpa_spec_from_the_rendered_overlays():
    cpu = sim.HpaSpec.from_manifest(one(render("overlays/cpu"), "HorizontalPodAutoscaler"))
    assert (cpu.min_replicas, cpu.max_replicas, cpu.target) == (2, 20, 0.5)
    assert cpu.metric == "triton_queue_share" and cpu.ratio_at_target() == pytest.approx(1.0)
    assert cpu.scale_up.stabilization_s == 0 and cpu.scale_down.stabilization_s == 600
    assert {(p.type, p.value, p.period_s) for p in cpu.scale_up.policies} == {("Percent", 100, 60), ("Pods", 4, 60)}
    gpu = sim.HpaSpec.from_manifest(one(render("overlays/gpu"), "HorizontalPodAutoscaler"))
    assert gpu.max_replicas == 8
    assert sim.parse_quantity("500m") == 0.5 and sim.parse_quantity("2") == 2.0


# ---- queueing ----------------------------------------------------------------------------------------------------


def test_erlang_c():
    assert sim.erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = utilization
    assert sim.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert sim.erlang_c(3, 0.0) == 0.0 and sim.erlang_c(3, 3.0) == 1.0


def test_mix_math(results):
    esr = results.models["esrgan_x4"]
    assert (esr.service_s, esr.saturation_rps, esr.slo_rps, esr.parallelism) == (0.25, 8.0, 7.5, 2)
    assert esr.measured_queue_ratio_at_slo == pytest.approx(280000 / 250000)
    mix = sim.Mix({"esrgan_x4": 1.0}, results.models)
    assert mix.pod_rps == pytest.approx(8.0)
    # M/M/2 at 50 %: a = 1, C = 1/3, Wq = C * S / (c - a) = 0.25 / 3
    assert mix.wait(0.5)[0] == pytest.approx(0.25 / 3)
    u = mix.utilization_for_ratio(1.0)
    assert mix.wait(u)[0] / mix.service_s == pytest.approx(1.0, rel=1e-6)
    half = sim.Mix({"esrgan_x4": 1, "animevideo_x4": 1}, results.models)
    assert half.pod_rps == pytest.approx(1 / (0.5 / 8 + 0.5 / 90))


# ---- whole simulations ---------------------------------------------------------------------------------------


def _simulation(results, **kw):
    mix = sim.Mix({"esrgan_x4": 1, "animevideo_x4": 1}, results.models)
    return sim.Simulation(mix, _spec(), sim.PodTiming(results.startup_s), slo_s=1.0, **kw)


def test_steady_traffic_settles_without_flapping(results):
    s = _simulation(results)
    tl, summary = s.run(sim.steady(40.0), 3600)
    assert len(set(tl.replicas)) == 1 and tl.replicas[0] == s.steady_state_replicas(40.0)
    assert summary.max_replicas == tl.replicas[0] >= 2


def test_burst_scales_up_late_and_down_slowly(results):
    s = _simulation(results)
    tl, summary = s.run(sim.burst(10.0, 60.0, start_s=1800, duration_s=1800), 7200)
    before = tl.replicas[1799]
    first_up = next(t for t in range(1800, 7200) if tl.replicas[t] > before)
    assert 1800 < first_up <= 1800 + 15 + 15 + 60  # a sync, the scrape lag, and the rate window filling
    ready_up = next(t for t in range(1800, 7200) if tl.ready[t] > before)
    assert ready_up - first_up >= 30 + 60  # Pending + model load before the new pod serves
    assert max(tl.violation[1800 : first_up + 120]) > 0.5  # the burst's first minutes miss the SLO
    assert max(tl.replicas) <= 20 and min(tl.replicas) >= 2
    # after the burst the pods stay for the scale-down window
    assert tl.replicas[3600 + 590] == tl.replicas[3599]
    assert tl.replicas[-1] < max(tl.replicas)
    assert 0 < summary.slo_violation_fraction < 0.5


def test_the_queue_share_settles_where_the_ratio_oscillates(results):
    """Why the HPA scales on queue / (queue + compute) and not on queue / compute: after a step of traffic, the
    ratio (convex in load: the HPA's proportional formula over-corrects) keeps the replica count cycling for hours;
    the share (about linear in load) settles. Same pods, same timing, equivalent targets (ratio 1 = share 0.5)."""
    mix = sim.Mix({"esrgan_x4": 1}, results.models)
    changes = {}
    for spec in (_spec(), _ratio_spec()):
        counts = []
        for level in (0.2, 0.4, 0.5):
            s = sim.Simulation(mix, spec, sim.PodTiming(60), slo_s=1.0, initial_replicas=2)
            tl, _ = s.run(sim.steady(level * 20 * mix.pod_rps), 4 * 3600)
            last = tl.replicas[2 * 3600 :]  # the second two hours: long after the step
            counts.append(sum(a != b for a, b in zip(last, last[1:])))
        changes[spec.metric_kind] = counts
    assert all(c >= 20 for c in changes["ratio"]), changes  # a change every few minutes, for hours
    assert max(changes["share"]) <= 4, changes  # settled (0 changes with these inputs)


def test_slower_startup_costs_more_slo(results):
    fast = sim.Simulation(sim.Mix({"esrgan_x4": 1}, results.models), _spec(), sim.PodTiming(20), slo_s=1.0)
    slow = sim.Simulation(sim.Mix({"esrgan_x4": 1}, results.models), _spec(), sim.PodTiming(300), slo_s=1.0)
    traffic = sim.burst(5.0, 40.0, 600, 1200)
    assert slow.run(traffic, 3600)[1].slo_violation_fraction > fast.run(traffic, 3600)[1].slo_violation_fraction


def test_diurnal_follows_the_day(results):
    s = _simulation(results)
    day = 4 * 3600  # a compressed day keeps the test fast
    tl, _ = s.run(sim.diurnal(80.0, 10.0, period_s=day), day)
    assert tl.replicas[day // 2] > tl.replicas[0]
    assert tl.replicas[day // 2] >= s.steady_state_replicas(80.0) - 1


def test_plot_writes_a_png(results, tmp_path):
    s = _simulation(results)
    tl, summary = s.run(sim.burst(10.0, 40.0, 600, 600), 1800)
    out = sim.plot(tl, summary, title="test", path=tmp_path / "p.png", target=1.0, pod_rps=s.mix.pod_rps)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- input checks ----------------------------------------------------------------------------------------------


def test_load_results_refuses_missing_or_bad_input(tmp_path):
    with pytest.raises(sim.CapacityInputError, match="Run the load test"):
        sim.load_results(tmp_path / "nope.json")
    bad = dict(TEST_RESULTS, format="v0")
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(sim.CapacityInputError, match="format"):
        sim.load_results(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps(TEST_RESULTS))
    with pytest.raises(sim.CapacityInputError, match="unknown model"):
        sim.load_results(tmp_path / "b.json", known_models=["esrgan_x4"])
    broken = json.loads(json.dumps(TEST_RESULTS))
    broken["models"]["esrgan_x4"]["points"][0]["p95_ms"] = 1  # p95 below p50
    (tmp_path / "c.json").write_text(json.dumps(broken))
    with pytest.raises(sim.CapacityInputError, match="implausible"):
        sim.load_results(tmp_path / "c.json")
    with pytest.raises(sim.CapacityInputError, match="no load-test numbers"):
        sim.Mix({"basicvsr_x4": 1}, sim.load_results(tmp_path / "b.json").models)
