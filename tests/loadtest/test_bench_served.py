"""The benchmark's runners side by side on a tiny case, including the served ones against the real server: the
plumbing (interleaved rounds, ratios within a round, Triton statistics breakdown, FLOPs, the doc) -- not speed."""

from __future__ import annotations

import pytest
from stylize.contract.descriptors import REGISTRY
from stylize.loadtest.bench import BenchSettings, run_case
from stylize.loadtest.bench_report import load_json, markdown, save_json

pytestmark = [pytest.mark.loadtest, pytest.mark.triton]


def test_runners_side_by_side(server, model_repository, tmp_path):
    settings = BenchSettings(repository=model_repository, url=server.grpc_url, rounds=2, max_rounds=2,
                             seconds_per_round=0.1, max_images=2,
                             runners=("torch", "ort", "ort_streams", "ort_prelu", "ov", "ov_bf16", "ov_streams",
                                      "served", "served_net"))
    case = run_case(REGISTRY["animevideo_x4"], 32, settings, server.grpc_url, log=lambda s: None,
                    metrics_url=server.metrics_url)
    assert case.images_per_round == 2
    for name in ("torch", "ort", "ort_streams", "ov", "ov_streams", "served", "served_net"):
        r = case.runners[name]
        assert r.error is None and len(r.seconds_per_image) == 2 and r.images_per_s > 0
    # bf16 runs where the CPU has it; elsewhere it is reported as not run, never measured as f32 under its name
    from stylize.engine.ov_runner import cpu_supports_bf16

    bf16 = case.runners["ov_bf16"]
    assert (bf16.error is None) == cpu_supports_bf16() and (bf16.error is None or "runs fp32" in bf16.error)
    assert case.served_layout["runtime"] in ("openvino", "onnxruntime")
    # the served graph is exported with its PRelu already rewritten: the "rewritten" runner has nothing to compare
    assert "ort_prelu" not in case.runners
    # the ratio is of the same round's two runners (the side-by-side rule), checked against the raw seconds
    served, ort = case.runners["served"].seconds_per_image, case.runners["ort"].seconds_per_image
    med, lo, hi = case.ratio("served", "ort")
    per_round = sorted(o / s for s, o in zip(served, ort))
    assert (lo, hi) == (per_round[0], per_round[-1]) and med == pytest.approx(sum(per_round) / 2)
    assert case.gflop_per_image == pytest.approx(1.24e6 * 32 * 32 / 1e9, rel=0.02)  # 1.24 MFLOP per input pixel
    # the CPU step runs the network in its own process: the network's share comes from the step's own histogram
    b = case.breakdown["served"]
    net = REGISTRY["animevideo_x4"].net_model
    assert b.network_model == f"{net} (in the step's process)" and b.network_ms > 0 and b.step_ms >= 0
    assert b.request_ms >= b.network_ms
    raw = case.breakdown["served_net"]  # the raw path goes through the network model itself
    assert raw.network_model == net and raw.network_ms > 0

    from stylize.loadtest.bench import BenchResult

    result = BenchResult(started="t", command="stylize bench --case animevideo_x4:32", settings={
        "photo": "astronaut.png", "rounds": 2, "threads": 2, "in_flight": 2, "seconds_per_round": 0.1,
        "max_images": 2}, machine={"cpu": "c", "cores": 2, "memory_gib": 1, "os": "o"},
        versions={"torch": "t", "onnxruntime": "o", "numpy": "n", "python": "p", "stylize": "s"},
        peak={"ort_fp32_gflops": 100.0, "numpy_fp32_gflops": 50.0, "ort_int8_gops": 400.0, "n": 64, "threads": 2},
        layout={"triton": "2.51.0"}, cases=[case], server=server.grpc_url)
    path = save_json(result, tmp_path / "bench.json")
    again = load_json(path)
    md = markdown(again, [], doc_dir=tmp_path, results_file=path)
    assert "1-thread sessions in parallel" in md  # the served layout's in-process reference is reported
    assert "| animevideo_x4 32² |" in md and "served ensemble" in md and "## Where a served request's time goes" in md
