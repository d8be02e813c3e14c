"""The server pod drains as long as its longest request: the Deployment's exit timeout and grace period are
stylize_k8s.drain's derivation from the limits the image steps admit, and a real tritonserver started with the
Deployment's flags lets requests in flight at SIGTERM finish (while one longer than the exit timeout is cut off)."""

from __future__ import annotations

import dataclasses
import http.client
import re
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from k8s_helpers import OVERLAYS, flag, one, render, server_container
from stylize.contract import descriptors
from stylize_k8s import drain

pytestmark = pytest.mark.k8s


# ---- the derivation ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def derived():
    return drain.derive()


def test_deployment_drain_is_the_derivation(derived):
    assert drain.mismatches(derived, drain.deployed()) == [], "run: python -m stylize_k8s.drain"
    for kustomization in OVERLAYS:  # no overlay shortens (or lengthens) it
        dep = one(render(kustomization), "Deployment", "triton")
        c = server_container(dep)
        assert flag(c["args"], "exit-timeout-secs") == [str(derived.exit_timeout_s)]
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == derived.grace_s
        assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(drain.PRESTOP_S)]


def test_the_drain_covers_the_longest_admitted_request_within_the_ceiling(derived):
    # every image model has its longest request computed, the exit timeout covers it plus the unload, and the
    # kubelet's SIGKILL comes after Triton's own deadline
    assert {r.model for r in derived.longest} == {d.id for d in descriptors.MODELS if not d.window}
    assert derived.exit_timeout_s >= derived.worst.seconds + drain.STOP_S
    assert derived.grace_s >= drain.PRESTOP_S + derived.exit_timeout_s + drain.KILL_MARGIN_S
    assert derived.grace_s <= drain.CEILING_S  # cluster-autoscaler still honours the whole drain
    # the numbers behind it: esrgan_x4 at 256^2 took 11.6 s served (docs/performance.md), 177 us per pixel
    esr = next(r for r in derived.longest if r.model == "esrgan_x4")
    assert esr.measured_at == 256 and esr.seconds_per_pixel * 256**2 == pytest.approx(11.58, abs=0.01)


def test_without_the_descriptor_caps_no_drain_would_fit():
    """The build's limit alone (16.7 Mpx, any outscale) admits esrgan_x4 requests of over an hour: the descriptors
    cap the RRDB models' inputs so that the longest request fits a drain under the ceiling."""
    import json

    per_pixel = drain.seconds_per_pixel(json.loads(drain.BENCH.read_text()))
    limits = drain._build_limits()
    esr = descriptors.get("esrgan_x4")
    no_cap = dataclasses.replace(esr, serving=dataclasses.replace(esr.serving, max_pixels=None))
    uncapped = drain.longest_request(no_cap, limits, per_pixel[esr.id])
    assert uncapped.input_side == 4096 and uncapped.seconds > 3600 > drain.CEILING_S
    capped = drain.longest_request(esr, limits, per_pixel[esr.id])
    assert capped.input_side == 1024 and capped.seconds < drain.CEILING_S


def test_the_image_step_configs_carry_the_caps():
    """What the pod admits is what the build writes: config.pbtxt's max_pixels is the descriptor's cap."""
    from stylize.contract.step import Limits
    from stylize_build import pbtxt  # installed by `make test`: a broken install fails here, it is not skipped

    for d in descriptors.MODELS:
        if d.window:
            continue
        text = pbtxt.image_config(d, weights_status="real", limits=drain._build_limits())
        expected = min(Limits().max_pixels, d.serving.max_pixels or Limits().max_pixels)
        assert f'key: "max_pixels" value: {{ string_value: "{expected}" }}' in text, d.id


# ---- the real server -------------------------------------------------------------------------------------------

# Flags the launcher sets from its settings (taken from the Deployment's values below, not passed twice), and the
# restricted-API flags, which the launcher sets with a key of its own (the Deployment's reads a Secret).
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
REQUEST_S = 3.0  # each long request: long enough to be in flight at SIGTERM, short enough for a 2-core machine

SLOW_MODEL = '''import json, os, time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Sleeps for the seconds the request asks for; marks the start of each execution in a folder."""

    def initialize(self, args):
        self.started = json.loads(args["model_config"])["parameters"]["started"]["string_value"]

    def execute(self, requests):
        out = []
        for r in requests:
            seconds = float(pb_utils.get_input_tensor_by_name(r, "SECONDS").as_numpy()[0])
            open(os.path.join(self.started, f"{time.monotonic_ns()}-{os.getpid()}"), "w").close()
            time.sleep(seconds)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("SLEPT", np.array([seconds], np.float32))]))
        return out
'''


def _slow_repository(root: Path) -> tuple[Path, Path]:
    repo, started = root / "repo", root / "started"
    (repo / "slow" / "1").mkdir(parents=True)
    started.mkdir()
    (repo / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    (repo / "slow" / "config.pbtxt").write_text(
        textwrap.dedent(f"""\
        name: "slow"
        backend: "python"
        max_batch_size: 0
        input [ {{ name: "SECONDS", data_type: TYPE_FP32, dims: [ 1 ] }} ]
        output [ {{ name: "SLEPT", data_type: TYPE_FP32, dims: [ 1 ] }} ]
        instance_group [ {{ count: 2, kind: KIND_CPU }} ]
        parameters {{ key: "started", value: {{ string_value: "{started}" }} }}
        """)
    )
    return repo, started


def _pod_server(launcher, repo: Path, log: Path, **overrides):
    """A TritonServer started the way the CPU overlay's pod starts tritonserver (its args, the launcher's ports)."""
    from stylize.server.errors import TritonNotFoundError
    from stylize.server.settings import ServerSettings

    args = server_container(one(render("overlays/cpu"), "Deployment", "triton"))["args"]
    (cache,) = flag(args, "cache-config")
    values = {
        "strict_readiness": flag(args, "strict-readiness") == ["true"],
        "exit_timeout": int(flag(args, "exit-timeout-secs")[0]),
        "cache_size": int(cache.split("size=")[1]),
        "extra_args": tuple(a for a in args if not any(a.startswith(f"--{o}=") for o in OWNED)),
        "log_file": log,
        "startup_timeout": 90,
    } | overrides
    try:
        return launcher.TritonServer(ServerSettings.local(repo, **values))
    except TritonNotFoundError as e:  # pragma: no cover - the `server` extra is missing
        pytest.skip(f"no tritonserver binary: {e}")


def _terminate_during_requests(server, started: Path, *, grace_s: float, hold_keep_alive: bool) -> dict:
    """What the kubelet does to a pod with requests in flight, after the preStop sleep: SIGTERM, SIGKILL (to every
    process of the container) ``grace_s`` later. One gRPC and one HTTP request are running, and a client holds an
    idle HTTP keep-alive connection: until the requests returned, or (``hold_keep_alive``) until the end."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    results: dict[str, object] = {}

    def call(proto: str) -> None:
        mod = grpcclient if proto == "grpc" else httpclient
        url = server.grpc_url if proto == "grpc" else server.http_url
        client = mod.InferenceServerClient(url, **({} if proto == "grpc" else {"network_timeout": 60}))
        x = mod.InferInput("SECONDS", [1], "FP32")
        x.set_data_from_numpy(np.array([REQUEST_S], np.float32))
        try:
            results[proto] = float(client.infer("slow", [x]).as_numpy("SLEPT")[0])
        except Exception as e:  # noqa: BLE001 - cut off: kept as the result (InferenceServerException, OSError...)
            results[proto] = e
        finally:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - the server is gone; closing a dead connection may fail any way
                pass

    idle = http.client.HTTPConnection(server.settings.client_host, server.settings.http_port, timeout=10)
    idle.request("GET", "/v2/health/live")
    assert idle.getresponse().read() == b""  # served, and the connection stays open (HTTP/1.1 keep-alive)
    calls = [threading.Thread(target=call, args=(p,)) for p in ("grpc", "http")]
    for t in calls:
        t.start()
    deadline = time.monotonic() + 30
    while len(list(started.iterdir())) < 2:  # both requests are executing
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.02)
    sigterm = time.monotonic()
    stopper = threading.Thread(target=lambda: results.setdefault("exit", server.stop(timeout=grace_s)))
    stopper.start()  # launcher.stop: SIGTERM, then SIGKILL to the process group after grace_s
    for t in calls:
        t.join(timeout=grace_s + 60)
    results["requests_done_s"] = time.monotonic() - sigterm
    if not hold_keep_alive:
        idle.close()
    released = time.monotonic()
    stopper.join(timeout=grace_s + 60)
    results["exit_after_release_s"] = time.monotonic() - released
    results["exit_after_sigterm_s"] = time.monotonic() - sigterm
    idle.close()
    return results


@pytest.mark.triton
@pytest.mark.slow
def test_requests_in_flight_survive_sigterm_of_the_pods_server(tmp_path):
    """The Deployment's flags (its exit timeout included) and the kubelet's grace period after the preStop sleep:
    a gRPC and an HTTP request in flight at SIGTERM both return, although an idle keep-alive connection holds
    Triton's HTTP stop (2.51 waits for HTTP connections first, counting against the exit timeout); the server then
    unloads and exits cleanly. Negative control, same flags but an exit timeout shorter than the request: the HTTP
    request in flight is cut off when the timeout ends (the drain test can fail)."""
    from stylize.server import launcher

    dep = one(render("overlays/cpu"), "Deployment", "triton")
    grace_after_sigterm = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] - drain.PRESTOP_S

    repo, started = _slow_repository(tmp_path / "a")
    server = _pod_server(launcher, repo, tmp_path / "pod.log")
    with server:
        assert server.settings.exit_timeout == drain.derive().exit_timeout_s > REQUEST_S
        r = _terminate_during_requests(server, started, grace_s=grace_after_sigterm, hold_keep_alive=False)
    log = server.log_path.read_text()
    assert r["grpc"] == REQUEST_S and r["http"] == REQUEST_S, (r, server.log_tail())
    assert r["exit"] == 0, (r, server.log_tail())
    assert re.search(r"Found \d+ HTTP service connections", log)  # it did wait on the open connections
    # unloading after the last request fitted in Triton's own exit timeout (what STOP_S budgets for; its time is
    # printed below, a measurement, not a bound)
    assert "Exit timeout expired" not in log, (r, server.log_tail())
    print(
        f"requests returned {r['requests_done_s']:.1f} s after SIGTERM; exit {r['exit_after_release_s']:.1f} s "
        "after the last connection closed"
    )

    repo, started = _slow_repository(tmp_path / "b")
    short = _pod_server(launcher, repo, tmp_path / "short.log", exit_timeout=2)
    with short:
        r = _terminate_during_requests(short, started, grace_s=grace_after_sigterm, hold_keep_alive=True)
    print(f"exit timeout 2 s: http {type(r['http']).__name__}, grpc {r['grpc']!r}, exit code {r['exit']}")
    assert not isinstance(r["http"], float), r  # cut off: its response never came
    assert r["exit"] != 0 and "Exit timeout expired" in short.log_path.read_text(), (r, short.log_tail())
