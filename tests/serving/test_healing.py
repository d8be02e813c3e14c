"""A python stub killed under load (what the kernel's OOM killer does) heals: the launcher reloads its model, the SDK
retries the requests that met the dead instance, and afterwards every instance answers. Where nothing heals (the
pod runs tritonserver directly), the probe fails so that the pod leaves the endpoints and is restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from small_repository import small_repository

pytestmark = pytest.mark.triton

MODEL = "animevideo_x2"  # its image step runs two instances: one dies, the other keeps serving


def _frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _raw_requests(server, n: int) -> list[str]:
    """``n`` requests with tritonclient and no retry: the errors, as strings (empty when every instance answers)."""
    import tritonclient.grpc as grpcclient
    from stylize.contract.descriptors import REGISTRY

    errors = []
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        for _ in range(n):
            errors.extend(_one(c, REGISTRY[MODEL]))
    return errors


def _one(c, desc) -> list[str]:
    import io

    import tritonclient.grpc as grpcclient
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_frame()).save(buf, format="PNG")
    from stylize.contract.descriptors import ENCODED_IMAGE

    inp = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[buf.getvalue()]], dtype=np.object_))
    try:
        c.infer(desc.id, [inp])
        return []
    except Exception as e:  # noqa: BLE001 - the message is the result
        return [str(e)]


def _image_stubs(server) -> dict[int, object]:
    from stylize.contract.descriptors import REGISTRY
    from stylize.server import healing

    return {pid: s for pid, s in healing.live_stubs(server.pid).items() if s.model == REGISTRY[MODEL].image_model}


@pytest.mark.slow
def test_a_stub_killed_under_load_heals(model_repository, tmp_path):
    from stylize import StylizeClient
    from stylize.contract.descriptors import REGISTRY
    from stylize.server.launcher import start_local

    repo = small_repository(model_repository, tmp_path / "repo", [MODEL])
    image_model = REGISTRY[MODEL].image_model
    with start_local(repo) as server:
        assert server.heals_stubs
        before = _image_stubs(server)
        assert len(before) == 2, before  # the premise: two instances of the image step
        done, failures, answered = threading.Event(), [], []

        def load() -> None:
            with StylizeClient(url=server.grpc_url) as client:
                while not done.is_set():
                    try:
                        out = client.infer(_frame(), model=MODEL)
                        answered.append(out.shape)
                    except Exception as e:  # noqa: BLE001
                        failures.append(repr(e))

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            while len(answered) < 4 and not failures:
                time.sleep(0.05)
            victim = sorted(before)[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 120
            while not server.heals and time.monotonic() < deadline:
                time.sleep(0.1)
            n = len(answered)
            while len(answered) < n + 6 and time.monotonic() < deadline and not failures:
                time.sleep(0.05)
        finally:
            done.set()
            for t in threads:
                t.join(timeout=120)
        assert [h.model for h in server.heals] == [image_model], server.heals
        heal = server.heals[0]
        assert heal.ok and heal.pid == victim, heal
        assert not failures, failures[:3]  # the SDK retried what met the dead instance
        # the reload replaced both instances; the surviving old one exits once the old model is released
        deadline = time.monotonic() + 60
        while (after := _image_stubs(server)) and len(after) != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(after) == 2 and not set(before) & set(after), (before, after)
        # no instance is dead any more: plain requests with no retry all answer (before the fix half of them
        # failed with "Stub process ... is not healthy", for good)
        assert _raw_requests(server, 8) == []
        ready = server._get(f"/v2/models/{MODEL}/ready")[0]
        assert ready == 200


@pytest.mark.slow
def test_without_healing_a_dead_stub_fails_the_probe(model_repository, tmp_path):
    """The pod's case: tritonserver alone (no watchdog, no explicit mode). The model stays READY in Triton, requests
    on the dead instance fail, and the probe the pod runs says so (exit 1), naming the dead stub."""
    from stylize.server.launcher import start_local

    repo = small_repository(model_repository, tmp_path / "repo", [MODEL])
    with start_local(repo, heal=False) as server:
        assert not server.heals_stubs and "--model-control-mode=explicit" not in server.command()
        probe = [
            sys.executable,
            "-m",
            "stylize.server.healing",
            "--check",
            "--pid",
            str(server.pid),
            "--ready-url",
            f"http://{server.http_url}/v2/health/ready",
        ]
        ok = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        victim = sorted(_image_stubs(server))[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.5)
        errors = _raw_requests(server, 6)
        assert any("is not healthy" in e for e in errors), errors  # the defect, as Triton 2.51 has it
        assert server._get("/v2/health/ready")[0] == 200  # ... and Triton still calls itself ready
        bad = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1
        assert f"dead python stub(s) (pid {victim})" in bad.stderr, bad.stderr


@pytest.mark.slow
def test_serve_restarts_a_killed_tritonserver_and_removes_what_it_left(model_repository):
    """`stylize serve` as users run it: tritonserver killed with SIGKILL is started again on the same ports, after
    its stubs' shared-memory regions (which nobody maps any more) are removed."""
    import urllib.request
    from pathlib import Path

    from stylize import StylizeClient
    from stylize.server import healing
    from stylize.server.settings import find_free_ports

    grpc, http, metrics = find_free_ports(3)
    serve = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("stylize")),
            "serve",
            "--model-repository",
            str(model_repository),
            "--models",
            MODEL,
            "--grpc-port",
            str(grpc),
            "--http-port",
            str(http),
            "--metrics-port",
            str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True)
    reader.start()

    def ready_server(not_pid: int | None = None) -> int:
        """Once `stylize serve` says so (Triton answers ready a moment before serve has finished its start)."""
        deadline = time.monotonic() + 240
        marker = "tritonserver restarted" if not_pid else "tritonserver ready"
        while time.monotonic() < deadline:
            assert serve.poll() is None, "".join(lines)[-3000:]
            if not any(marker in line for line in lines):
                time.sleep(0.2)
                continue
            pids = [
                st.pid
                for st in healing._children(serve.pid, Path("/proc"))
                if st.comm == "tritonserver" and st.state != "Z" and st.pid != not_pid
            ]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                    if r.status == 200 and pids:
                        return pids[0]
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("stylize serve was not ready in time")

    try:
        first = ready_server()
        regions = {s.region for s in healing.live_stubs(first).values()}
        assert regions and all((Path("/dev/shm") / r).exists() for r in regions)
        os.kill(first, signal.SIGKILL)
        second = ready_server(not_pid=first)
        assert second != first
        assert not [r for r in regions if (Path("/dev/shm") / r).exists()]  # the dead server's regions are gone
        with StylizeClient(url=f"127.0.0.1:{grpc}") as client:
            assert client.infer(_frame(), model=MODEL).shape == (96, 128, 3)
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=120)
        reader.join(timeout=10)
    out = "".join(lines)
    assert serve.returncode == 0, out[-3000:]
    assert "restarting it on the same ports" in out and "tritonserver restarted" in out


SLOW_INIT_MODEL = """\
import json
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        with open(params["marker"]["string_value"], "a") as f:
            f.write(f"{os.getpid()}\\n")
        if params["fail"]["string_value"] == "1":
            raise ValueError("this model cannot load")
        time.sleep(3)

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
                for r in requests]
"""


def _slow_init_repository(root, *, fail: bool):
    model = root / "repo" / "slow_init"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(SLOW_INIT_MODEL)
    marker = root / "initialized"
    (model / "config.pbtxt").write_text(f"""\
name: "slow_init"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_UINT8 dims: [ -1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_UINT8 dims: [ -1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "marker" value: {{ string_value: "{marker}" }} }}
parameters {{ key: "fail" value: {{ string_value: "{1 if fail else 0}" }} }}
""")
    return root / "repo", marker


def _server_for(repo, tmp_path):
    import dataclasses

    from stylize.server.launcher import TritonServer
    from stylize.server.settings import ServerSettings

    settings = ServerSettings.local(repo, exit_timeout=5, startup_timeout=120)
    return TritonServer(dataclasses.replace(settings, log_file=tmp_path / "tritonserver.log"))


@pytest.mark.slow
def test_a_stub_that_dies_while_its_model_loads_is_started_again(tmp_path):
    """What failed a CI run: an image step's stub died (SIGBUS in OpenVINO) inside initialize(), Triton reported
    "Stub process ... is not healthy" and exited, and the whole suite lost its server. Here the stub is killed for
    real inside initialize(): the launcher starts tritonserver again, once, and the model serves."""
    import tritonclient.http as httpclient

    repo, marker = _slow_init_repository(tmp_path, fail=False)
    server = _server_for(repo, tmp_path)
    killed: list[int] = []

    def kill_the_first_stub() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (marker.exists() and marker.read_text().strip()):
            time.sleep(0.02)
        pid = int(marker.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_first_stub)
    killer.start()
    try:
        server.start()
        server.wait_ready()
        killer.join(timeout=60)
        assert killed, "the stub was never seen initializing"
        assert len(server.load_retries) == 1, server.load_retries
        assert "Stub process 'slow_init_0_0' is not healthy" in server.load_retries[0]["slow_init"]
        pids = [int(p) for p in marker.read_text().split()]
        assert len(pids) == 2 and pids[0] == killed[0] != pids[1], pids  # a second stub, in a second server
        assert "slow_init" in server.ready_models()
        c = httpclient.InferenceServerClient(server.http_url)
        x = httpclient.InferInput("IN", [3], "UINT8")
        x.set_data_from_numpy(np.array([1, 2, 3], dtype=np.uint8))
        assert c.infer("slow_init", [x]).as_numpy("OUT").tolist() == [1, 2, 3]
        assert "starting tritonserver again: a python stub died" in server.log_path.read_text()
    finally:
        killer.join(timeout=60)
        server.stop()


def test_a_model_that_cannot_load_is_not_started_again(tmp_path):
    """An exception in initialize() is the model's fault: one start, the error, no retry."""
    from stylize.server.errors import ModelRepositoryError
    from stylize.server.launcher import is_transient_load_failure

    repo, marker = _slow_init_repository(tmp_path, fail=True)
    server = _server_for(repo, tmp_path)
    try:
        server.start()
        with pytest.raises(ModelRepositoryError, match="this model cannot load") as e:
            server.wait_ready()
        assert not is_transient_load_failure(e.value.failures)
        assert server.load_retries == [] and len(marker.read_text().split()) == 1
    finally:
        server.stop()
