"""The HPA metric: adapter rules consistent with the HPA, the descriptors and Triton's real metric names, and
better than Triton's example rule, shown with numbers (a worked example and real /metrics text)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from k8s_helpers import K8S, OVERLAYS, load_tool, one, render
from stylize import descriptors

pytestmark = pytest.mark.k8s

DATA = Path(__file__).parent / "data"
NV_NAME = re.compile(r"\bnv_[a-z_]+")
# Families that only a GPU server exports (Triton metrics docs, "GPU Metrics"); cannot appear on this machine.
GPU_ONLY = {"nv_gpu_utilization"}

generate = load_tool("tools/generate.py")
qm = load_tool("tools/queue_metric.py")


@pytest.fixture(scope="module")
def real_scrapes():
    """Two scrapes of a real Triton 2.51.0 (k8s/tools/capture_queue_metrics.py; scenario in triton-queue.json)."""
    meta = json.loads((DATA / "triton-queue.json").read_text())
    t0 = qm.parse((DATA / "triton-queue-t0.prom").read_text())
    t1 = qm.parse((DATA / "triton-queue-t1.prom").read_text())
    assert meta["triton_version"] == "2.51.0"
    return t0, t1, meta["seconds"]


def _rules(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["rules"]


# ---- consistency ---------------------------------------------------------------------------------------------


def test_generated_files_are_up_to_date():
    assert generate.stale() == [], "run: python k8s/tools/generate.py"


def test_hpa_metrics_are_served_by_the_adapter_rules():
    rules = _rules(K8S / "monitoring/prometheus-adapter/rules.yaml")
    served = {r["name"]["as"] for r in rules}
    for kustomization in OVERLAYS:
        hpa = one(render(kustomization), "HorizontalPodAutoscaler")
        for m in hpa["spec"]["metrics"]:
            assert m["type"] == "Pods"  # per-pod metric: the adapter maps the `pod` label onto pods
            assert m["pods"]["metric"]["name"] in served
            assert m["pods"]["target"]["type"] == "AverageValue"
    # the Helm values hold the very same rules, and the rendered ConfigMap the very same file
    values = yaml.safe_load((K8S / "monitoring/prometheus-adapter/values.yaml").read_text())
    assert values["rules"]["custom"] == rules
    cm = one(render("monitoring"), "ConfigMap", "stylize-adapter-config")
    assert yaml.safe_load(cm["data"]["config.yaml"])["rules"] == rules
    for r in rules:
        assert r["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert "<<.LabelMatchers>>" in r["metricsQuery"] and "<<.GroupBy>>" in r["metricsQuery"]


def test_adapter_queries_select_exactly_the_composing_models():
    rules = _rules(K8S / "monitoring/prometheus-adapter/rules.yaml")
    composing = set(generate.composing_models())
    ensembles = {d.id for d in descriptors.MODELS}
    expected = set()
    for d in descriptors.MODELS:
        expected |= {d.net_model, d.trt_model} | ({d.pre_model, d.post_model} if not d.window else set())
    assert composing == expected and not composing & ensembles
    for r in rules:
        selected = [set(m.split("|")) for m in re.findall(r'model=~"([^"]+)"', r["metricsQuery"])]
        assert selected and all(s in (composing, ensembles) for s in selected)
        assert selected[0] == composing  # the queue-time numerator: composing models only


def test_adapter_and_dashboard_read_metrics_triton_really_exports(real_scrapes):
    _, t1, _ = real_scrapes
    exported = t1.types  # family -> type, from the real server's "# TYPE" lines
    for r in _rules(K8S / "monitoring/prometheus-adapter/rules.yaml"):
        for name in NV_NAME.findall(r["metricsQuery"] + r["seriesQuery"]):
            assert exported.get(name) == "counter", f"{name}: adapter rules rate() it, Triton exports {exported.get(name)}"
    dashboard = json.loads((K8S / "monitoring/grafana/stylize-triton.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for name in {n for e in exprs for n in NV_NAME.findall(e)} - GPU_ONLY:
        assert name in exported, f"dashboard reads {name}, which Triton 2.51 does not export"
    # the quantiles the latency panel reads exist
    quantiles = {dict(labels).get("quantile") for (n, labels) in t1.samples if n == "nv_inference_request_summary_us"}
    assert {"0.5", "0.95"} <= quantiles
    # the HPA panel plots exactly what the adapter serves
    assert generate.queue_compute_ratio(generate.NS, "pod") in exprs


# ---- the numbers ---------------------------------------------------------------------------------------------


def test_worked_example_upstream_rule_underreports():
    """Three models on one pod: one saturated (1000 req/s, 20 ms queue, 2 ms compute), one slow and quiet
    (1 req/s, no queue, 100 ms compute), one loaded and idle. Hand-computed expectations."""
    R = qm.ModelRates
    models = {
        "hot_net": R(queue_us=1000 * 20_000, compute_us=1000 * 2_000, requests=1000),
        "slow_net": R(queue_us=0, compute_us=1 * 100_000, requests=1),
        "idle_net": R(queue_us=0, compute_us=0, requests=0),
        "hot": R(queue_us=0, compute_us=1000 * 2_000, requests=1000),  # the ensembles repeat compute, not queue
        "slow": R(queue_us=0, compute_us=1 * 100_000, requests=1),
    }
    composing, clients = ["hot_net", "slow_net", "idle_net"], ["hot", "slow"]
    c = qm.compare(models, composing=composing, clients=clients, window_s=30)
    # example rule: hot = 20e6*30/(1+1000*30) = 19999.33 us, every other series 0, mean over 5 series
    assert c.upstream_avg_queue_us == pytest.approx(20e6 * 30 / 30001 / 5)  # 3999.9 us: "4 ms"
    # what clients waited: 20e6 us of queue per second over 1001 client requests per second
    assert c.queue_us_per_client_request == pytest.approx(20e6 / 1001)  # 19980 us: "20 ms"
    assert c.upstream_underreports_by == pytest.approx(4.995, rel=1e-3)
    # ours: queue / compute over composing models = 20e6 / 2.1e6; ensembles in the sum halve it
    assert c.ratio_composing == pytest.approx(20e6 / 2.1e6)  # 9.52
    assert c.ratio_all_models == pytest.approx(20e6 / 4.2e6)  # 4.76
    # the example rule shrinks further with every idle model loaded (the real repository loads 27)
    more = dict(models, **{f"idle{i}": R(0, 0, 0) for i in range(22)})
    assert qm.upstream_avg_queue_us(more, window_s=30) == pytest.approx(20e6 * 30 / 30001 / 27)
    assert qm.queue_compute_ratio(more, composing) == pytest.approx(c.ratio_composing)


def test_real_metrics_upstream_rule_underreports(real_scrapes):
    """Real Triton: a repository shaped like ours (27 models), one model saturated, two busy, the rest idle."""
    t0, t1, seconds = real_scrapes
    models = qm.model_rates(t0, t1, seconds)
    assert set(models) == set(generate.composing_models()) - {d.trt_model for d in descriptors.MODELS} | {
        d.id for d in descriptors.MODELS}
    c = qm.compare(models, composing=generate.composing_models(), clients=generate.client_models())
    hot = models["animevideo_x4_net"]
    assert hot.queue_us / hot.requests > 20_000  # the saturated network: > 20 ms queued per request
    # clients waited > 30 ms on average; the example rule says < 3 ms
    assert c.queue_us_per_client_request > 30_000
    assert c.upstream_avg_queue_us < 3_000
    assert c.upstream_underreports_by > 10
    # counting the ensembles' series (compute repeated) would halve the HPA metric
    assert c.ratio_all_models == pytest.approx(c.ratio_composing / 2, rel=0.05)
    assert c.ratio_composing > 2


def test_parse_rejects_garbage():
    with pytest.raises(qm.MetricsFormatError):
        qm.parse('nv_inference_count{model="a" 1\n')


# ---- the PromQL itself, evaluated by Prometheus -----------------------------------------------------------------


def _promtool_case(models: dict, seconds_per_step: int = 15, steps: int = 8):
    """Input series for promtool: pod triton-0 replays the real per-second rates, pod triton-1 is idle."""
    series, rounded = [], {}
    for model, r in models.items():
        incs = {qm.QUEUE: round(r.queue_us * seconds_per_step, 3),
                qm.COMPUTE: round(r.compute_us * seconds_per_step, 3),
                qm.SUCCESS: round(r.requests * seconds_per_step, 3)}
        rounded[model] = qm.ModelRates(*(incs[n] / seconds_per_step for n in (qm.QUEUE, qm.COMPUTE, qm.SUCCESS)))
        for name, inc in incs.items():
            for pod, step in (("triton-0", inc), ("triton-1", 0)):
                series.append({"series": f'{name}{{namespace="stylize",pod="{pod}",model="{model}",version="1"}}',
                               "values": f"0+{step}x{steps}"})
    return series, rounded


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool missing (Debian package `prometheus`; the Makefile's system-deps install it)")
def test_adapter_promql_evaluates_to_the_python_numbers(real_scrapes, tmp_path):
    """Prometheus evaluates the adapter's query (templates filled as prometheus-adapter fills them) and Triton's
    example rule on series replaying the real scrape: same numbers as the Python formulas above."""
    t0, t1, seconds = real_scrapes
    series, models = _promtool_case(qm.model_rates(t0, t1, seconds))
    matchers = 'namespace="stylize",pod=~"triton-0|triton-1"'
    ours = qm.queue_compute_ratio(models, generate.composing_models())
    upstream = qm.upstream_avg_queue_us(models, window_s=30)
    per_request = qm.queue_us_per_client_request(models, generate.composing_models(), generate.client_models())
    assert ours > 2 and upstream > 0

    def close(expr: str, busy: float) -> dict:
        """Pod triton-0 must evaluate to `busy`, the idle pod triton-1 to 0 (not NaN), within 1e-9 relative."""
        expected = (f'label_replace(vector({busy!r}), "pod", "triton-0", "", "")'
                    f' or label_replace(vector(0), "pod", "triton-1", "", "")')
        tol = abs(busy) * 1e-9
        return {"expr": f"abs(({expr}) - on(pod) ({expected})) <= bool {tol!r}", "eval_time": "2m",
                "exp_samples": [{"labels": '{pod="triton-0"}', "value": 1}, {"labels": '{pod="triton-1"}', "value": 1}]}

    tests = [
        close(generate.queue_compute_ratio(matchers, "pod"), ours),
        close(generate.queue_us_per_request(matchers, "pod"), per_request),
        close(generate.upstream_avg_time_queue_us(matchers, "pod"), upstream),
    ]
    spec = {"evaluation_interval": "15s",
            "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": tests}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec, sort_keys=False, width=100_000))
    out = subprocess.run(["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
