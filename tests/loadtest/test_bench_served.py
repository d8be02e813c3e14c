"""The benchmark's runners side by side on a tiny case, including the served ones against the real server: the
plumbing (interleaved rounds, ratios within a round, Triton statistics breakdown, FLOPs, the doc) -- not speed."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
from stylize.contract.descriptors import REGISTRY
from stylize.loadtest.bench import BenchSettings, run_case
from stylize.loadtest.bench_report import load_json, markdown, save_json

pytestmark = [pytest.mark.loadtest, pytest.mark.triton]


def _served_counts(server, desc) -> tuple[int, float]:
    """(requests Triton booked on the ensemble, network observations in the image step's own histogram)."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    stats = client.get_inference_statistics(desc.id, as_json=True)["model_stats"]
    client.close()
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf'^stylize_image_network_seconds_count{{[^}}]*model="{desc.image_model}"[^}}]*}} (\S+)$', text, re.M)
    assert m, f"no stylize_image_network_seconds series of {desc.image_model}"
    return sum(int(s.get("inference_count", 0)) for s in stats), float(m.group(1))


def _settled_counts(server, desc, requests0: int, observed0: float, timeout: float = 10.0) -> tuple[int, float]:
    """The counts once both have booked the same requests since (requests0, observed0): Triton may book the
    ensemble's last request a moment after it answered, the step books its histogram before answering. ``timeout``
    is a hang guard; whether they agree is the caller's assertion."""
    deadline = time.monotonic() + timeout
    requests, observed = _served_counts(server, desc)
    while observed - observed0 != requests - requests0 and time.monotonic() < deadline:
        time.sleep(0.1)
        requests, observed = _served_counts(server, desc)
    return requests, observed


def test_runners_side_by_side(server, model_repository, tmp_path):
    desc = REGISTRY["animevideo_x4"]
    requests0, observed0 = _served_counts(server, desc)
    settings = BenchSettings(
        repository=model_repository,
        url=server.grpc_url,
        rounds=2,
        max_rounds=2,
        seconds_per_round=0.1,
        max_images=2,
        runners=("torch", "ort", "ort_streams", "ort_prelu", "ov", "ov_bf16", "ov_streams", "served", "served_net"),
    )
    case = run_case(desc, 32, settings, server.grpc_url, log=lambda s: None, metrics_url=server.metrics_url)
    requests1, observed1 = _settled_counts(server, desc, requests0, observed0)
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
    # ... booked once per served request (one image each): the network's share is of the requests the ensemble's
    # request time covers (counts, not an ordering of durations)
    assert requests1 - requests0 >= settings.rounds * case.images_per_round
    assert observed1 - observed0 == requests1 - requests0
    raw = case.breakdown["served_net"]  # the raw path goes through the network model itself
    assert raw.network_model == net and raw.network_ms > 0

    from stylize.loadtest.bench import BenchResult

    result = BenchResult(
        started="t",
        command="stylize bench --case animevideo_x4:32",
        settings={
            "photo": "astronaut.png",
            "rounds": 2,
            "threads": 2,
            "in_flight": 2,
            "seconds_per_round": 0.1,
            "max_images": 2,
        },
        machine={"cpu": "c", "cores": 2, "memory_gib": 1, "os": "o"},
        versions={"torch": "t", "onnxruntime": "o", "numpy": "n", "python": "p", "stylize": "s"},
        peak={"ort_fp32_gflops": 100.0, "numpy_fp32_gflops": 50.0, "ort_int8_gops": 400.0, "n": 64, "threads": 2},
        layout={"triton": "2.51.0"},
        cases=[case],
        server=server.grpc_url,
    )
    path = save_json(result, tmp_path / "bench.json")
    again = load_json(path)
    md = markdown(again, [], doc_dir=tmp_path, results_file=path)
    assert "1-thread sessions in parallel" in md  # the served layout's in-process reference is reported
    assert "| animevideo_x4 32² |" in md and "served ensemble" in md and "## Where a served request's time goes" in md
