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
from k8s_helpers import K8S, OVERLAYS, one, render
from stylize.contract import descriptors
from stylize_k8s import generate
from stylize_k8s import queue_metric as qm

pytestmark = pytest.mark.k8s

DATA = Path(__file__).parent / "data"
NV_NAME = re.compile(r"\bnv_[a-z_]+")
# Families that only a GPU server exports (Triton metrics docs, "GPU Metrics"); cannot appear on this machine.
GPU_ONLY = {"nv_gpu_utilization"}


@pytest.fixture(scope="module")
def real_scrapes():
    """Two scrapes of a real Triton 2.51.0 (python -m stylize_k8s.capture_queue_metrics; scenario in
    triton-queue.json)."""
    meta = json.loads((DATA / "triton-queue.json").read_text())
    t0 = qm.parse((DATA / "triton-queue-t0.prom").read_text())
    t1 = qm.parse((DATA / "triton-queue-t1.prom").read_text())
    assert meta["triton_version"] == "2.51.0"
    return t0, t1, meta["seconds"]


def _rules(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["rules"]


# ---- consistency ---------------------------------------------------------------------------------------------


def test_generated_files_are_up_to_date():
    assert generate.stale() == [], "run: python -m stylize_k8s.generate"


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


def test_adapter_queries_select_the_models_from_the_descriptors():
    rules = _rules(K8S / "monitoring/prometheus-adapter/rules.yaml")
    composing, clients = set(generate.composing_models()), set(generate.client_models())
    entries, raw = set(generate.entry_models()), set(generate.raw_frame_models())
    for d in descriptors.MODELS:  # every network variant and python step is composing; the ensemble is a client
        assert {d.net_model, d.trt_model} <= composing and d.id in clients
        # (the nested ensemble holding the response cache repeats its step's time, like the client-facing one)
        assert set(d.triton_models) - {d.id, getattr(d, "cached_model", None)} <= composing
        # client requests enter through the image ensemble or, with raw frames, through the network itself
        assert d.net_model in entries and (d.id in entries) == (not d.window)
        assert d.trt_model not in entries  # the GPU steps' BLS callee: its time is inside its ensemble's
    assert not composing & clients and raw <= composing and entries <= clients | raw
    for r in rules:
        selected = [set(m.split("|")) for m in re.findall(r'model=~"([^"]+)"', r["metricsQuery"])]
        assert selected and all(s in (composing, entries) for s in selected)
        assert selected[0] == composing  # the queue-time numerator: every model that does work
    hpa = next(r for r in rules if r["name"]["as"] == generate.HPA_METRIC)["metricsQuery"]
    # the denominator is the clients' end-to-end time (compute sums double-count through ensembles and BLS)
    assert f'{generate.DURATION}{{<<.LabelMatchers>>,model=~"{"|".join(generate.entry_models())}"}}' in hpa
    assert generate.COMPUTE not in hpa and hpa.startswith("clamp_max(") and hpa.endswith(", 1)")


def test_cpu_image_steps_do_not_call_the_raw_frame_networks_through_bls():
    """The denominator counts <id>_net as client time because only raw-frame clients call it: the CPU image steps
    the build writes run the network in their own process (a BLS caller would count the callee's time twice)."""
    from stylize_build import pbtxt

    for d in descriptors.MODELS:
        if d.window:
            continue
        for net in (d.net_model, d.int8_model):
            text = pbtxt.image_config(d, weights_status="real", net_model=net)
            (runtime,) = re.findall(r'key: "net_runtime" value: \{ string_value: "(\w+)" \}', text)
            assert runtime != "triton", (d.id, net)


def test_adapter_and_dashboard_read_metrics_triton_really_exports(real_scrapes):
    _, t1, _ = real_scrapes
    exported = t1.types  # family -> type, from the real server's "# TYPE" lines
    for r in _rules(K8S / "monitoring/prometheus-adapter/rules.yaml"):
        for name in NV_NAME.findall(r["metricsQuery"] + r["seriesQuery"]):
            assert exported.get(name) == "counter", (
                f"{name}: adapter rules rate() it, Triton exports {exported.get(name)}"
            )
    dashboard = json.loads((K8S / "monitoring/grafana/stylize-triton.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for name in {n for e in exprs for n in NV_NAME.findall(e)} - GPU_ONLY:
        assert name in exported, f"dashboard reads {name}, which Triton 2.51 does not export"
    # the quantiles the latency panel reads exist
    quantiles = {dict(labels).get("quantile") for (n, labels) in t1.samples if n == "nv_inference_request_summary_us"}
    assert {"0.5", "0.95"} <= quantiles
    # the HPA panel plots exactly what the adapter serves
    assert generate.queue_share(generate.NS, "pod") in exprs


# ---- the numbers ---------------------------------------------------------------------------------------------


def test_worked_example_upstream_rule_underreports():
    """One pod, hand-computed. Client model A: 1000 req/s, each queued 20 ms in its step and computing 2 ms.
    Client model B: 1 req/s, no queue, 100 ms of compute. Model C: loaded, idle. Each client model is an ensemble
    over one step; B's step calls its network through BLS (so the step's compute contains the network's)."""
    R = qm.ModelRates
    models = {
        "a": R(queue_us=0, compute_us=1000 * 2_000, requests=1000, duration_us=1000 * 22_000),  # ensemble
        "a_step": R(queue_us=1000 * 20_000, compute_us=1000 * 2_000, requests=1000, duration_us=1000 * 22_000),
        "b": R(queue_us=0, compute_us=100_000, requests=1, duration_us=100_000),  # ensemble
        "b_step": R(queue_us=0, compute_us=100_000, requests=1, duration_us=100_000),  # contains b_net's 90 ms
        "b_net": R(queue_us=0, compute_us=90_000, requests=1, duration_us=90_000),  # called through BLS
        "c": R(0, 0, 0),
        "c_step": R(0, 0, 0),
    }
    composing, clients = ["a_step", "b_step", "b_net", "c_step"], ["a", "b", "c"]
    c = qm.compare(models, composing=composing, clients=clients, window_s=30)
    # example rule: a_step = 20e6*30/(1+1000*30) = 19999.33 us, every other series 0, mean over 7 series
    assert c.upstream_avg_queue_us == pytest.approx(20e6 * 30 / 30001 / 7)  # 2857 us: "3 ms"
    # what clients waited: 20e6 us of queue per second over 1001 client requests per second
    assert c.queue_us_per_client_request == pytest.approx(20e6 / 1001)  # 19980 us: "20 ms"
    assert c.upstream_underreports_by == pytest.approx(6.99, rel=1e-3)
    # ours: queued share of the clients' time = 20e6 / (22e6 + 0.1e6); as a ratio 20e6 / 2.1e6
    assert c.share == pytest.approx(20e6 / 22.1e6)  # 0.905
    assert c.ratio == pytest.approx(20e6 / 2.1e6)  # 9.52
    # summing compute instead: the ensembles and the BLS callee are counted again
    assert c.naive_ratio_all_series == pytest.approx(20e6 / (2e6 * 2 + 0.1e6 * 2 + 0.09e6))  # 4.66
    assert c.naive_ratio_composing == pytest.approx(20e6 / (2e6 + 0.1e6 + 0.09e6))  # 9.13
    # the example rule shrinks further with every idle model loaded; ours does not move
    more = dict(models, **{f"idle{i}": R(0, 0, 0) for i in range(20)})
    assert qm.upstream_avg_queue_us(more, window_s=30) == pytest.approx(20e6 * 30 / 30001 / 27)
    assert qm.queue_share(more, composing, clients) == pytest.approx(c.share)


def test_real_metrics_upstream_rule_underreports(real_scrapes):
    """Real Triton: a repository shaped like ours, one model saturated, two busy, the rest loaded and idle."""
    t0, t1, seconds = real_scrapes
    models = qm.model_rates(t0, t1, seconds)
    assert len(models) >= 15 and set(generate.client_models()) & set(models)
    c = qm.compare(models, composing=generate.composing_models(), clients=generate.client_models())
    # clients waited > 30 ms on average; the example rule says < 5 ms
    assert c.queue_us_per_client_request > 30_000
    assert c.upstream_avg_queue_us < 5_000
    assert c.upstream_underreports_by > 10
    assert c.share > 0.5 and c.ratio == pytest.approx(c.share / (1 - c.share))
    # compute sums count the ensembles' (and BLS callees') compute again: they under-report the ratio
    assert c.naive_ratio_all_series < 0.6 * c.ratio and c.naive_ratio_composing < c.ratio


def test_parse_rejects_garbage():
    with pytest.raises(qm.MetricsFormatError):
        qm.parse('nv_inference_count{model="a" 1\n')


# ---- the PromQL itself, evaluated by Prometheus -----------------------------------------------------------------


def _promtool_case(models: dict, seconds_per_step: int = 15, steps: int = 8):
    """Input series for promtool: pod triton-0 replays the real per-second rates, pod triton-1 is idle."""
    series, rounded = [], {}
    for model, r in models.items():
        incs = {
            qm.QUEUE: round(r.queue_us * seconds_per_step, 3),
            qm.COMPUTE: round(r.compute_us * seconds_per_step, 3),
            qm.SUCCESS: round(r.requests * seconds_per_step, 3),
            qm.DURATION: round(r.duration_us * seconds_per_step, 3),
        }
        rounded[model] = qm.ModelRates(
            *(incs[n] / seconds_per_step for n in (qm.QUEUE, qm.COMPUTE, qm.SUCCESS, qm.DURATION))
        )
        for name, inc in incs.items():
            for pod, step in (("triton-0", inc), ("triton-1", 0)):
                series.append(
                    {
                        "series": f'{name}{{namespace="stylize",pod="{pod}",model="{model}",version="1"}}',
                        "values": f"0+{step}x{steps}",
                    }
                )
    return series, rounded


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool missing (Debian package `prometheus`; the Makefile's system-deps install it)",
)
def test_adapter_promql_evaluates_to_the_python_numbers(real_scrapes, tmp_path):
    """Prometheus evaluates the adapter's query (templates filled as prometheus-adapter fills them) and Triton's
    example rule on series replaying the real scrape: same numbers as the Python formulas above."""
    t0, t1, seconds = real_scrapes
    series, models = _promtool_case(qm.model_rates(t0, t1, seconds))
    matchers = 'namespace="stylize",pod=~"triton-0|triton-1"'
    composing, clients = generate.composing_models(), generate.entry_models()
    ratio = qm.queue_compute_ratio(models, composing, clients)
    share = qm.queue_share(models, composing, clients)
    upstream = qm.upstream_avg_queue_us(models, window_s=30)
    per_request = qm.queue_us_per_client_request(models, composing, clients)
    assert ratio > 2 and 0.5 < share < 1 and upstream > 0

    def close(expr: str, busy: float) -> dict:
        """Pod triton-0 must evaluate to `busy`, the idle pod triton-1 to 0 (not NaN), within 1e-9 relative."""
        expected = (
            f'label_replace(vector({busy!r}), "pod", "triton-0", "", "")'
            f' or label_replace(vector(0), "pod", "triton-1", "", "")'
        )
        tol = abs(busy) * 1e-9
        return {
            "expr": f"abs(({expr}) - on(pod) ({expected})) <= bool {tol!r}",
            "eval_time": "2m",
            "exp_samples": [{"labels": '{pod="triton-0"}', "value": 1}, {"labels": '{pod="triton-1"}', "value": 1}],
        }

    tests = [
        close(generate.queue_share(matchers, "pod"), share),
        close(generate.queue_compute_ratio(matchers, "pod"), ratio),
        close(generate.queue_us_per_request(matchers, "pod"), per_request),
        close(generate.upstream_avg_time_queue_us(matchers, "pod"), upstream),
    ]
    spec = {
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": tests}],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec, sort_keys=False, width=100_000))
    out = subprocess.run(
        ["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


# Per pod: {model: (queue us/s, request duration us/s, requests/s)}; what Triton's counters grow by per second.
TRAFFIC = {
    # video / infer_frames: 20 raw frames/s straight to the network, 47 us queued and 50 ms end to end each
    "raw": {"esrgan_x4_net": (20 * 47, 20 * 50_000, 20), "esrgan_x4": (0, 0, 0)},  # its ensemble: loaded, idle
    # 2 image req/s (3 s each, 1 s of it queued in the step), 10 raw frames/s (100 ms, 60 ms queued) and a video
    # window every 2 s through its pass-through ensemble (2 s, 0.5 s queued in the network)
    "mixed": {
        "esrgan_anime_x4": (0, 2 * 3_000_000, 2),
        "esrgan_anime_x4_image": (2 * 1_000_000, 2 * 3_000_000, 2),
        "animevideo_x4_net": (10 * 60_000, 10 * 100_000, 10),
        "basicvsr_x4": (0, 0.5 * 2_000_000, 0.5),
        "basicvsr_x4_net": (0.5 * 500_000, 0.5 * 2_000_000, 0.5),
    },
    "idle": {"esrgan_x4": (0, 0, 0), "esrgan_x4_image": (0, 0, 0), "esrgan_x4_net": (0, 0, 0)},
    # a client calling a GPU pod's TensorRT plan directly: queue time whose requests no entry model counts (the
    # pod's loaded ensembles export their series, idle)
    "gpu-raw": {"esrgan_x4_trt": (5 * 10_000, 5 * 60_000, 5), "esrgan_x4": (0, 0, 0), "esrgan_x4_image": (0, 0, 0)},
}
# Worked by hand from TRAFFIC: queued / end-to-end of the entry models, capped at 1
EXPECTED_SHARE = {"raw": 940 / 1_000_000, "mixed": (2e6 + 6e5 + 2.5e5) / (6e6 + 1e6 + 1e6), "idle": 0.0, "gpu-raw": 1.0}
EXPECTED_QUEUE_US = {"raw": 47.0, "mixed": 2.85e6 / (2 + 10 + 0.5), "idle": 0.0}  # per entry request


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool missing (Debian package `prometheus`; the Makefile's system-deps install it)",
)
def test_deployed_rules_bounded_for_raw_frame_mixed_and_idle_traffic(tmp_path):
    """`promtool test rules` on the adapter rules as deployed (rules.yaml, templates filled as prometheus-adapter
    fills them, recorded per pod): raw-frame clients, a mix, an idle pod and queue time with no counted request.
    The rule before raw frames were counted read 940 (raw), 0.41 (mixed) and 50000 (gpu-raw) here."""
    pods = "|".join(TRAFFIC)
    matchers = f'namespace="stylize",pod=~"{pods}"'
    rules = _rules(K8S / "monitoring/prometheus-adapter/rules.yaml")
    recorded = [
        {
            "record": f"adapter:{r['name']['as']}",
            "expr": r["metricsQuery"].replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod"),
        }
        for r in rules
    ]
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "stylize-adapter", "interval": "15s", "rules": recorded}]}, width=100_000)
    )
    series = []
    for pod, models in TRAFFIC.items():
        for model, (queue, duration, requests) in models.items():
            for name, per_s in ((qm.QUEUE, queue), (qm.DURATION, duration), (qm.SUCCESS, requests)):
                series.append(
                    {
                        "series": f'{name}{{namespace="stylize",pod="{pod}",model="{model}",version="1"}}',
                        "values": f"0+{per_s * 15:g}x8",
                    }
                )

    def check(record: str, expected: dict[str, float]) -> dict:
        want = " or ".join(f'label_replace(vector({v!r}), "pod", "{p}", "", "")' for p, v in expected.items())
        return {
            "expr": f"abs({record} - on(pod) ({want})) <= bool on(pod) (1e-9 * abs({want}) + 1e-12)",
            "eval_time": "2m",
            "exp_samples": [{"labels": f'{{pod="{p}"}}', "value": 1} for p in expected],
        }

    spec = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    check(f"adapter:{generate.HPA_METRIC}", EXPECTED_SHARE),
                    check("adapter:triton_queue_us_per_request", EXPECTED_QUEUE_US),
                    # the share never leaves [0, 1], on every pod
                    {
                        "expr": f"count(adapter:{generate.HPA_METRIC} >= 0 <= 1)",
                        "eval_time": "2m",
                        "exp_samples": [{"labels": "{}", "value": len(TRAFFIC)}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec, sort_keys=False, width=100_000))
    out = subprocess.run(
        ["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_docs_quote_the_numbers_of_the_real_scrapes(real_scrapes):
    """docs/k8s.md cites the comparison on the captured scrapes: the numbers it prints are these."""
    t0, t1, seconds = real_scrapes
    c = qm.compare(
        qm.model_rates(t0, t1, seconds), composing=generate.composing_models(), clients=generate.client_models()
    )
    doc = (K8S.parent / "docs" / "k8s.md").read_text()
    for quoted in (
        f"**{c.queue_us_per_client_request / 1000:.1f} ms**",
        f"**{c.upstream_avg_queue_us / 1000:.1f} ms**",
        f"({c.upstream_underreports_by:.1f}x less)",
        f"gives {c.naive_ratio_all_series:.2f}",
        f"composing models {c.naive_ratio_composing:.2f}",
        f"was {c.ratio:.2f}",
    ):
        assert quoted in doc, quoted
