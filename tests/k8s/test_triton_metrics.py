"""A real Triton, started by the project's launcher with the Deployment's own flags: the flags are accepted, and the
metric names the adapter rules and the dashboard read are the ones the server really exports."""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest
from k8s_helpers import flag, one, render, server_container
from stylize.contract import descriptors
from stylize_k8s import capture_queue_metrics as capture
from stylize_k8s import generate
from stylize_k8s import queue_metric as qm

pytestmark = [pytest.mark.k8s, pytest.mark.triton]

import tritonclient.http as httpclient
from stylize.server import launcher
from stylize.server.errors import TritonNotFoundError
from stylize.server.settings import ServerSettings

# Flags the launcher sets from its settings (checked against the Deployment's values below, not passed twice).
OWNED = (
    "model-repository",
    "http-port",
    "grpc-port",
    "metrics-port",
    "strict-readiness",
    "exit-timeout-secs",
    "log-verbose",
    "cache-config",
    "http-restricted-api",
    "grpc-restricted-protocol",
)
IMAGE_MODEL, VIDEO_MODEL = "esrgan_x4", "basicvsr_x4"


def _scrape(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return qm.parse(r.read().decode())


def test_deployment_flags_run_and_adapter_metrics_exist(tmp_path):
    args = server_container(one(render("overlays/cpu"), "Deployment", "triton"))["args"]
    extra = [a for a in args if not any(a.startswith(f"--{o}=") for o in OWNED)]
    # the launcher restricts the admin APIs as the Deployment does, with its own key instead of the Secret's
    from stylize.contract import access

    assert [a for a in args if "restricted" in a] == access.restriction_args(f"$({access.ADMIN_KEY_ENV})")
    (cache,) = flag(args, "cache-config")
    repo = tmp_path / "repo"
    capture.build_repository(repo, [IMAGE_MODEL, VIDEO_MODEL])

    try:
        settings = ServerSettings.local(
            repo,
            strict_readiness=flag(args, "strict-readiness") == ["true"],
            exit_timeout=int(flag(args, "exit-timeout-secs")[0]),
            cache_size=int(cache.split("size=")[1]),
            extra_args=tuple(extra),
        )
        server = launcher.TritonServer(settings)
    except TritonNotFoundError as e:  # pragma: no cover - the `server` extra is missing
        pytest.skip(f"no tritonserver binary: {e}")
    with server:
        client = httpclient.InferenceServerClient(server.http_url)
        x = httpclient.InferInput("X", [1], "FP32")
        x.set_data_from_numpy(np.zeros(1, np.float32))
        t0 = _scrape(server.metrics_url)
        start = time.monotonic()
        for _ in range(5):
            client.infer(IMAGE_MODEL, [x])  # identical inputs: the network's response cache hits
            client.infer(VIDEO_MODEL, [x])
        time.sleep(2.5)  # > --metrics-interval-ms: the per-interval families have refreshed
        t1 = _scrape(server.metrics_url)
        seconds = time.monotonic() - start
        client.close()  # an open keep-alive connection would hold the server's shutdown for --exit-timeout-secs

    # every family the adapter rules read, as a counter (they rate() it)
    for r in generate.adapter_rules():
        for name in set(re.findall(r"\bnv_[a-z_]+", r["metricsQuery"] + r["seriesQuery"])):
            assert t1.types.get(name) == "counter", name
    # ... labelled with the composing model names the adapter's regex selects
    labelled = set(t1.per_model(generate.QUEUE))
    expected = {
        n
        for m in (IMAGE_MODEL, VIDEO_MODEL)
        for n in descriptors.get(m).triton_models
        if n not in (m, descriptors.get(m).cached_model)
    }
    assert expected <= labelled and expected <= set(generate.composing_models())
    assert {IMAGE_MODEL, VIDEO_MODEL} <= labelled  # the ensembles export series too (excluded by the regex)
    # the families the dashboard reads, with --metrics-config=summary_latencies=true from the Deployment
    for name in (
        "nv_inference_request_summary_us",
        "nv_cache_num_hits_per_model",
        "nv_cache_num_misses_per_model",
        "nv_inference_request_failure",
        "nv_inference_request_duration_us",
        "nv_cpu_utilization",
        "nv_inference_pending_request_count",
    ):
        assert name in t1.types, name
    hits = t1.per_model("nv_cache_num_hits_per_model")
    assert hits.get(capture.CACHED, 0) >= 4
    # and the HPA metric computes from them (counts and counter deltas: no duration is compared with another)
    models = qm.model_rates(t0, t1, seconds)
    assert models[IMAGE_MODEL].requests * seconds == pytest.approx(5)

    def delta(name: str, names) -> float:
        before, after = t0.per_model(name), t1.per_model(name)
        return sum(after.get(m, 0.0) - before.get(m, 0.0) for m in names)

    # every client request went once through each of its composing models: the numerator's series are of the same
    # 5 + 5 requests as the denominator's
    for m in expected:
        assert delta(qm.SUCCESS, [m]) == 5, m
    composing, clients = generate.composing_models(), generate.client_models()
    end_to_end = delta(qm.DURATION, clients)
    assert end_to_end > 0
    # the share is queued time over end-to-end time of those requests, whatever the clock (the rates' seconds cancel)
    share = qm.queue_share(models, composing, clients)
    assert 0 <= share <= 1
    assert share == pytest.approx(min(delta(qm.QUEUE, composing) / end_to_end, 1.0), rel=1e-9)
