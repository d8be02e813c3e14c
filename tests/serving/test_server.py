"""The embedded tritonserver with the Python-based onnxruntime backend, on a tiny repository built here (no torch).

One server per module serves every model; the failure tests start their own short-lived servers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from stylize.contract import access
from stylize.contract.descriptors import FRAME_IN, FRAME_OUT
from stylize.server.errors import ModelRepositoryError, PortInUseError
from stylize.server.launcher import TritonServer, start_local
from stylize.server.settings import ServerSettings
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.triton

OPSET = 17
ECHO = "echo_py"  # plain python backend model
INVERT = "invert_net"  # backend: "onnxruntime", the config style the build writes
RAGGED = "invert_ragged"  # same graph, allow_ragged_batch so different shapes share one execute() call
BATCHED = "invert_batched"  # same graph, batched only when full: the same-shape batching test's own model
ENSEMBLE = "invert_twice"  # platform: "ensemble" of two INVERT steps
# the ragged batching test's requests (the last one valid for Triton, not for the graph): RAGGED's preferred batch
RAGGED_SHAPES = [(1, 9, 11, 3), (1, 4, 6, 3), (2, 9, 11, 3), (1, 5, 5, 3), (1, 4, 6, 3), (1, 8, 8, 4)]
RAGGED_FRAMES = sum(s[0] for s in RAGGED_SHAPES)  # 7


# ---- a tiny repository ----------------------------------------------------------------------------------------


def invert_onnx(path: Path) -> None:
    """uint8 NHWC -> 255 - x through float (Cast, Mul, Add, Cast); dynamic batch/H/W, 3 channels."""
    shape = ["N", "H", "W", 3]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", [FRAME_IN.name], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xf", "minus_one"], ["neg"]),
            helper.make_node("Add", ["neg", "c255"], ["yf"]),
            helper.make_node("Cast", ["yf"], [FRAME_OUT.name], to=TensorProto.UINT8),
        ],
        "invert",
        [helper.make_tensor_value_info(FRAME_IN.name, TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info(FRAME_OUT.name, TensorProto.UINT8, shape)],
        initializer=[
            helper.make_tensor("minus_one", TensorProto.FLOAT, [], [-1.0]),
            helper.make_tensor("c255", TensorProto.FLOAT, [], [255.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def _dims(dims) -> str:
    return ", ".join(str(d) for d in dims)


# A batching test's model runs a batch when it is full (its preferred size, what the test sends at once) and waits
# for it up to this long: the test counts executions, never time (a request that has not arrived by then is a hang).
FULL_BATCH_WAIT_US = 30_000_000  # below _infer_concurrently's 60 s: a missing request shows as a count


def ort_config(
    name: str,
    *,
    dims=FRAME_IN.dims,
    ragged: bool = False,
    input_name: str = FRAME_IN.name,
    delay_us: int = 2000,
    cache: bool = False,
    preferred: int | None = None,
) -> str:
    batching = f"max_queue_delay_microseconds: {delay_us}"
    if preferred is not None:
        batching = f"preferred_batch_size: [ {preferred} ] {batching}"
    return textwrap.dedent(f"""\
        name: "{name}"
        backend: "onnxruntime"
        max_batch_size: 8
        input [ {{ name: "{input_name}" data_type: TYPE_UINT8 dims: [ {_dims(dims)} ]{" allow_ragged_batch: true" if ragged else ""} }} ]
        output [ {{ name: "{FRAME_OUT.name}" data_type: TYPE_UINT8 dims: [ {_dims(dims)} ] }} ]
        instance_group [ {{ count: 1 kind: KIND_CPU }} ]
        dynamic_batching {{ {batching} }}
        optimization {{ graph {{ level: 1 }} }}
        parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
        parameters {{ key: "inter_op_thread_count" value: {{ string_value: "1" }} }}
        parameters {{ key: "stylize_id" value: {{ string_value: "test" }} }}
        response_cache {{ enable: {"true" if cache else "false"} }}
        model_warmup [ {{ name: "zeros" batch_size: 1 inputs {{ key: "{input_name}" value: {{
            data_type: TYPE_UINT8 dims: [ 16, 16, 3 ] zero_data: true }} }} }} ]
        """)


ECHO_MODEL = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
                for r in requests]
"""

ECHO_CONFIG = f"""\
name: "{ECHO}"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_UINT8 dims: [ -1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_UINT8 dims: [ -1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""


def ensemble_config(name: str, net: str) -> str:
    """Two passes through the ONNX model (255 - (255 - x) == x): ensemble routing through our backend."""

    def step(src: str, dst: str) -> str:
        return (
            f'{{ model_name: "{net}" model_version: -1 input_map {{ key: "{FRAME_IN.name}" value: "{src}" }} '
            f'output_map {{ key: "{FRAME_OUT.name}" value: "{dst}" }} }}'
        )

    return textwrap.dedent(f"""\
        name: "{name}"
        platform: "ensemble"
        max_batch_size: 8
        input [ {{ name: "{FRAME_IN.name}" data_type: TYPE_UINT8 dims: [ {_dims(FRAME_IN.dims)} ] }} ]
        output [ {{ name: "{FRAME_OUT.name}" data_type: TYPE_UINT8 dims: [ {_dims(FRAME_OUT.dims)} ] }} ]
        ensemble_scheduling {{ step [
          {step(FRAME_IN.name, "inverted")},
          {step("inverted", FRAME_OUT.name)}
        ] }}
        """)


def add_echo(repo: Path) -> None:
    (repo / ECHO / "1").mkdir(parents=True)
    (repo / ECHO / "config.pbtxt").write_text(ECHO_CONFIG)
    (repo / ECHO / "1" / "model.py").write_text(ECHO_MODEL)


def add_ort(repo: Path, name: str, **config) -> None:
    invert_onnx(repo / name / "1" / "model.onnx")
    (repo / name / "config.pbtxt").write_text(ort_config(name, **config))


def settings_for(repo: Path, tmp: Path, **extra) -> ServerSettings:
    settings = ServerSettings.local(repo, exit_timeout=5, startup_timeout=90, **extra)
    return dataclasses.replace(settings, log_file=tmp / f"tritonserver-{settings.http_port}.log")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repository")
    add_echo(repo)
    add_ort(repo, INVERT, cache=True)
    add_ort(repo, RAGGED, dims=(-1, -1, -1), ragged=True, preferred=RAGGED_FRAMES, delay_us=FULL_BATCH_WAIT_US)
    add_ort(repo, BATCHED, preferred=8, delay_us=FULL_BATCH_WAIT_US)
    (repo / ENSEMBLE / "1").mkdir(parents=True)
    (repo / ENSEMBLE / "config.pbtxt").write_text(ensemble_config(ENSEMBLE, INVERT))
    return repo


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    started = time.monotonic()
    srv = start_local(repo, exit_timeout=5, cache_size=1 << 20, ort_threads=1, log_file=logs / "tritonserver.log")
    srv.startup_seconds = time.monotonic() - started
    yield srv
    code = srv.stop()
    assert code == 0, srv.log_tail()


@pytest.fixture
def grpc(server):
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield client
    client.close()


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)


def grpc_input(name: str, array: np.ndarray, dtype: str = "UINT8") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


# ---- the running server ---------------------------------------------------------------------------------------


def test_server_is_ready_with_every_model(server):
    assert server.ready_models() == sorted([ECHO, INVERT, RAGGED, BATCHED, ENSEMBLE])
    assert server.model_failures() == {}
    assert server.stub_info["numpy"].startswith("1.")
    print(f"startup {server.startup_seconds:.1f} s")  # shown with -s; timing is the benchmark's job, not a test's


def test_onnxruntime_backend_is_the_python_based_one(server):
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/{INVERT}/config", headers=access.http_headers(server.admin_key)
    )  # an admin API
    with urllib.request.urlopen(request) as r:
        config = json.load(r)
    assert config["backend"] == "onnxruntime"
    assert config["runtime"] == "model.py"  # the python-based backend, not a native libtriton_onnxruntime.so
    assert config["parameters"]["intra_op_thread_count"]["string_value"] == "1"
    assert config["optimization"]["graph"]["level"] == 1


def _status(url: str, *, method: str = "GET", body: bytes | None = None, headers=None) -> int:
    request = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_launcher_restricts_the_admin_apis_to_its_own_key(server, grpc):
    """A launcher-started server (`stylize serve`, the tests) refuses the admin APIs without the key, a random one
    here (STYLIZE_ADMIN_KEY unset), which the process that started it holds and which is written nowhere."""
    base = f"http://{server.http_url}/v2"
    admin = access.http_headers(server.admin_key)
    calls = [
        ("POST", "/repository/index", b""),
        ("GET", f"/models/{INVERT}/config", None),
        ("POST", "/logging", b'{"log_verbose_level": 1}'),
        ("GET", "/trace/setting", None),
        ("GET", "/systemsharedmemory/status", None),
    ]
    for method, path, body in calls:
        assert _status(base + path, method=method, body=body) == 403, path
        assert _status(base + path, method=method, body=body, headers=admin) == 200, path
    assert _status(base + "/logging", method="POST", body=b'{"log_verbose_level": 0}', headers=admin) == 200
    with pytest.raises(InferenceServerException, match="restricted") as e:
        grpc.get_model_repository_index()
    assert e.value.status() == "StatusCode.UNAVAILABLE"  # Triton's code for it, sic
    assert grpc.get_model_repository_index(headers=access.grpc_headers(server.admin_key), as_json=True)["models"]
    # inference, health, metadata and statistics stay open
    assert _status(base + f"/models/{INVERT}") == _status(base + "/health/ready") == 200
    assert _status(base + f"/models/{INVERT}/stats") == 200
    # the key is on tritonserver's command line only: not in the log, the command written there is redacted
    log = server.log_path.read_text()
    assert server.admin_key not in log and "stylize-admin-key=<admin key>" in log.splitlines()[0]


def test_python_backend_keeps_every_byte_of_an_odd_sized_tensor(server, grpc, rng):
    # numpy 2 in the stub turned a 269-byte input into 269 copies of its first byte: compare every byte
    data = rng.integers(0, 256, 269, dtype=np.uint8)
    assert len(np.unique(data)) > 100
    out = grpc.infer(ECHO, [grpc_input("IN", data)]).as_numpy("OUT")
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_onnx_model_exact_over_both_protocols(server, rng, protocol):
    frame = rng.integers(0, 256, (1, 13, 17, 3), dtype=np.uint8)  # 663 bytes, odd
    if protocol == "grpc":
        with grpcclient.InferenceServerClient(url=server.grpc_url) as client:
            out = client.infer(INVERT, [grpc_input(FRAME_IN.name, frame)]).as_numpy(FRAME_OUT.name)
    else:
        client = httpclient.InferenceServerClient(url=server.http_url)
        try:
            tensor = httpclient.InferInput(FRAME_IN.name, list(frame.shape), "UINT8")
            tensor.set_data_from_numpy(frame, binary_data=True)
            out = client.infer(INVERT, [tensor]).as_numpy(FRAME_OUT.name)
        finally:
            client.close()
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out, 255 - frame)


def _stats(server, model: str) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/stats") as r:
        return json.load(r)["model_stats"][0]


def _infer_concurrently(server, model: str, frames: list[np.ndarray]) -> list:
    """Send every frame at once (async gRPC) and return results/errors in order."""
    done: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(url=server.grpc_url) as client:
        for i, frame in enumerate(frames):
            client.async_infer(
                model,
                [grpc_input(FRAME_IN.name, frame)],
                callback=lambda result, error, i=i: done.put((i, result, error)),
            )
        outcomes = [done.get(timeout=60) for _ in frames]
    ordered = [None] * len(frames)
    for i, result, error in outcomes:
        ordered[i] = error if error is not None else result.as_numpy(FRAME_OUT.name)
    return ordered


def test_concurrent_requests_of_different_shapes_share_a_batch(server, rng):
    """Six requests of four shapes (one of them invalid for the graph) sent at once run in one execution: RAGGED
    runs a batch when its 7 frames are there, so the count does not depend on how fast they arrive."""
    shapes = RAGGED_SHAPES
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    before = _stats(server, RAGGED)
    results = _infer_concurrently(server, RAGGED, frames)
    # the backend reports its statistics after it has sent the responses: wait for them (bounded)
    deadline = time.monotonic() + 15
    while True:
        after = _stats(server, RAGGED)
        if int(after["inference_count"]) - int(before["inference_count"]) >= 7 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for frame, result in zip(frames[:5], results[:5]):
        assert isinstance(result, np.ndarray), result
        np.testing.assert_array_equal(result, 255 - frame)
    # the 4-channel frame passes Triton's own checks (dims -1) but not the graph: INVALID_ARG from our backend,
    # while the valid requests of the same execute() call succeeded
    bad = results[5]
    assert isinstance(bad, InferenceServerException)
    assert bad.status() == "StatusCode.INVALID_ARGUMENT"
    assert "shape [1, 8, 8, 4]" in bad.message() and "[batch, -1, -1, 3]" in bad.message()
    requests = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert requests == RAGGED_FRAMES == 7  # six requests, one of them with two frames
    assert executions == 1, f"{executions} executions for 6 requests of 4 shapes: not one batch"


def test_ensemble_routes_through_the_onnxruntime_backend(server, grpc, rng):
    frame = rng.integers(0, 256, (2, 11, 7, 3), dtype=np.uint8)
    out = grpc.infer(ENSEMBLE, [grpc_input(FRAME_IN.name, frame)]).as_numpy(FRAME_OUT.name)
    np.testing.assert_array_equal(out, frame)


def _counts(grpc, model: str) -> tuple[int, int]:
    s = grpc.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


def test_same_shape_requests_are_batched_by_triton(server, grpc, rng):
    """Triton's own statistics: 8 concurrent requests of one shape, 8 inferences in one execution (BATCHED runs a
    batch when it is full: the count does not depend on how fast the requests arrive)."""
    frames = [rng.integers(0, 256, (1, 6, 10, 3), dtype=np.uint8) for _ in range(8)]
    inferences, executions = _counts(grpc, BATCHED)
    results = _infer_concurrently(server, BATCHED, frames)
    for frame, result in zip(frames, results):
        np.testing.assert_array_equal(result, 255 - frame)
    deadline = time.monotonic() + 15  # statistics are booked just after the responses (a bounded wait)
    while _counts(grpc, BATCHED)[0] - inferences < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    after_inferences, after_executions = _counts(grpc, BATCHED)
    assert after_inferences - inferences == 8
    assert after_executions - executions == 1, "the 8 concurrent requests did not run as one batch"


def test_wrong_dtype_is_invalid_argument_and_server_stays_ready(server, grpc, rng):
    frame = rng.random((1, 4, 4, 3), dtype=np.float32)
    with pytest.raises(InferenceServerException) as info:
        grpc.infer(INVERT, [grpc_input(FRAME_IN.name, frame, "FP32")])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "FP32" in info.value.message() or "float" in info.value.message().lower()
    with pytest.raises(InferenceServerException) as info:  # rank: no channel axis
        grpc.infer(INVERT, [grpc_input(FRAME_IN.name, np.zeros((1, 4, 4), np.uint8))])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert grpc.is_server_ready() and grpc.is_model_ready(INVERT)
    ok = rng.integers(0, 256, (1, 3, 3, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        grpc.infer(INVERT, [grpc_input(FRAME_IN.name, ok)]).as_numpy(FRAME_OUT.name), 255 - ok
    )


def test_response_cache_answers_a_repeated_request(server, grpc, rng):
    frame = rng.integers(0, 256, (1, 5, 3, 3), dtype=np.uint8)
    before = _stats(server, INVERT)["inference_stats"]["cache_hit"]["count"]
    outputs = [grpc.infer(INVERT, [grpc_input(FRAME_IN.name, frame)]).as_numpy(FRAME_OUT.name) for _ in range(2)]
    after = _stats(server, INVERT)["inference_stats"]["cache_hit"]["count"]
    assert int(after) - int(before) == 1
    for out in outputs:
        np.testing.assert_array_equal(out, 255 - frame)


def test_metrics_endpoint_counts_inferences(server, grpc, rng):
    grpc.infer(ECHO, [grpc_input("IN", rng.integers(0, 256, 7, dtype=np.uint8))])
    with urllib.request.urlopen(server.metrics_url) as r:
        text = r.read().decode()
    assert f'nv_inference_request_success{{model="{ECHO}",version="1"}}' in text
    assert "nv_cpu_utilization" in text


# ---- failures -------------------------------------------------------------------------------------------------


def test_missing_and_empty_repositories_are_refused_before_starting(tmp_path):
    with pytest.raises(ModelRepositoryError, match="does not exist"):
        TritonServer(settings_for(tmp_path / "nope", tmp_path)).start()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelRepositoryError, match="holds no models"):
        TritonServer(settings_for(tmp_path / "empty", tmp_path)).start()


def test_taken_port_is_refused_before_starting(repo, tmp_path):
    settings = settings_for(repo, tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", settings.http_port))
        holder.listen()
        server = TritonServer(settings)
        with pytest.raises(PortInUseError, match=f"HTTP port {settings.http_port} is already in use") as info:
            server.start()
        assert info.value.port == settings.http_port
        assert not server.is_running()


@pytest.mark.parametrize("which", ["grpc_port", "metrics_port"])  # first and last service Triton starts
def test_taken_port_reported_from_tritons_own_bind_failure(tmp_path, which):
    repo = tmp_path / "repo"
    add_echo(repo)
    settings = settings_for(repo, tmp_path)
    taken = getattr(settings, which)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        server = TritonServer(settings)
        server.start(check_ports=False)  # let tritonserver itself hit the taken port
        try:
            with pytest.raises(PortInUseError) as info:
                server.wait_ready(timeout=60)
        finally:
            server.stop()
    assert info.value.port == taken
    assert "already in use" in info.value.log_tail
    assert not server.is_running()


def test_models_that_fail_to_load_are_named_with_the_reason(tmp_path):
    repo = tmp_path / "repo"
    add_echo(repo)
    add_ort(repo, "wrong_name", input_name="IMAGE")  # the graph's input is FRAME
    server = TritonServer(settings_for(repo, tmp_path))
    with pytest.raises(ModelRepositoryError) as info:
        with server:
            pass
    assert set(info.value.failures) == {"wrong_name"}
    assert "'IMAGE' is not in the ONNX graph" in info.value.failures["wrong_name"]
    assert "wrong_name" in str(info.value)
    assert not server.is_running()


def _other_address() -> str | None:
    """An address of this machine that is not loopback (where a server bound to 0.0.0.0 is reachable), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_serve_cli_drains_on_sigint(tmp_path):
    """`stylize serve` with no --host: bound to loopback only, and it says so; SIGINT drains it."""
    other = _other_address()
    repo = tmp_path / "repo"
    add_echo(repo)
    settings = settings_for(repo, tmp_path)
    code = textwrap.dedent("""
        import argparse, sys
        from stylize.commands.serve import add_serve_arguments, run_serve
        parser = add_serve_arguments(argparse.ArgumentParser())
        sys.exit(run_serve(parser.parse_args(sys.argv[1:])))
    """)
    args = [
        "--model-repository",
        str(repo),
        "--grpc-port",
        str(settings.grpc_port),
        "--http-port",
        str(settings.http_port),
        "--metrics-port",
        str(settings.metrics_port),
        "--exit-timeout",
        "5",
        "--ort-threads",
        "1",
    ]
    env = dict(os.environ, STYLIZE_CACHE=str(tmp_path / "cache"))
    stderr = open(tmp_path / "serve.stderr", "w")  # the echoed server log: a file, so no pipe can fill up
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    )
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("models"):
                break
        assert any(ECHO in line for line in lines), "".join(lines) + (tmp_path / "serve.stderr").read_text()
        assert any(f"127.0.0.1:{settings.grpc_port}" in line for line in lines)
        assert any("bound to 127.0.0.1 (this machine only)" in line for line in lines), "".join(lines)
        assert _accepts("127.0.0.1", settings.grpc_port) and _accepts("127.0.0.1", settings.http_port)
        if other is not None:  # not listening on the machine's other interfaces (it did on 0.0.0.0 before)
            for port in (settings.grpc_port, settings.http_port, settings.metrics_port):
                assert not _accepts(other, port), (other, port)
        with grpcclient.InferenceServerClient(url=f"127.0.0.1:{settings.grpc_port}") as client:
            data = np.arange(5, dtype=np.uint8)
            np.testing.assert_array_equal(client.infer(ECHO, [grpc_input("IN", data)]).as_numpy("OUT"), data)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    assert proc.returncode == 0, (tmp_path / "serve.stderr").read_text()[-3000:]
    assert "SIGINT received, draining" in out
    assert (tmp_path / "cache" / "backends").is_dir()
