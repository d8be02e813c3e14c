"""The server as the GPU overlay starts it (explicit model control, k8s/overlays/gpu): the admin APIs refuse calls
without the key, inference does not need it, the SDK works with and without the key; empty frames are refused.

Issue 13, defect 1: in this mode a load request carrying its own model.py ran that code in the server, and anyone
could read configs, register shared memory or change the log level. The overlay's rendered args are used as they
are, except what this machine has to change: the repository path (/models), the ports, the drain timeout,
``$(STYLIZE_ADMIN_KEY)`` (expanded here as the kubelet expands it from the Secret), the --load-model list (the
TensorRT plans do not exist here: the same list with the CPU networks of a small repository), and the embedded
server's backend and cache directories (the NVIDIA image has them at its defaults).
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from small_repository import small_repository
from stylize.contract import access
from stylize.contract.descriptors import REGISTRY
from stylize.contract.errors import AccessDenied
from stylize.engine.photos import real_photo_crop
from stylize.sdk.client import StylizeClient
from stylize.server import launcher
from stylize.server.install import find_tritonserver, prepare_backend_directory
from stylize.server.settings import ServerSettings
from stylize_k8s import kubectl
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("animevideo_x2", "basicvsr_x4")
KEY = "test-admin-key-" + "0123456789abcdef"


def overlay_server_args() -> list[str]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "k8s" / "overlays" / "gpu")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    deployment = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "triton")["args"]


def here(args: list[str], repo: Path, settings: ServerSettings) -> list[str]:
    """The overlay's args with this machine's paths, ports and models (see the module docstring)."""
    swap = {
        "--model-repository": str(repo),
        "--http-port": str(settings.http_port),
        "--grpc-port": str(settings.grpc_port),
        "--metrics-port": str(settings.metrics_port),
        "--exit-timeout-secs": str(settings.exit_timeout),
    }
    cpu = {REGISTRY[m].trt_model: REGISTRY[m].net_model for m in MODELS}
    present = {p.name for p in repo.iterdir()}
    out = []
    for a in args:
        name, _, value = a.partition("=")
        if name == "--load-model":
            value = cpu.get(value, value)
            if value not in present:
                continue
        out.append(f"{name}={swap.get(name, value)}".replace(f"$({access.ADMIN_KEY_ENV})", KEY) if value else a)
    return out


class OverlayServer(launcher.TritonServer):
    """tritonserver with the overlay's command line instead of the launcher's."""

    def __init__(self, settings: ServerSettings, args: list[str]):
        super().__init__(settings)
        self.args = args

    def command(self) -> list[str]:
        install = self.install or find_tritonserver(self.settings.tritonserver)
        cmd = [str(install.binary), *self.args, f"--id={self._server_id}"]
        if install.embedded:
            cmd += [
                f"--backend-directory={prepare_backend_directory(install, self.settings.cache_dir)}",
                f"--cache-directory={install.caches}",
            ]
        return cmd


@pytest.fixture(scope="module")
def server(model_repository, tmp_path_factory):
    repo = small_repository(model_repository, tmp_path_factory.mktemp("overlay_repository"), MODELS)
    settings = ServerSettings.local(repo, exit_timeout=5, admin_key=KEY)
    args = here(overlay_server_args(), repo, settings)
    assert "--model-control-mode=explicit" in args and access.restriction_args(KEY)[0] in args
    with OverlayServer(settings, args) as s:
        yield s


@pytest.fixture
def grpc(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


def http(server, method: str, path: str, body: bytes | None = None, *, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2{path}", method=method, data=body, headers=access.http_headers(key)
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def code_that_leaves_a_mark(marker: Path) -> tuple[str, bytes]:
    """What the finding sent: a load request with its own config and model.py (here it only writes a file)."""
    config = {
        "name": "intruder",
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}],
    }
    source = (
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    )
    return json.dumps(config), source.encode()


# ---- without the key --------------------------------------------------------------------------------------------


def test_a_load_request_with_its_own_code_is_refused(server, grpc, tmp_path):
    marker = tmp_path / "intruder_ran"
    config, source = code_that_leaves_a_mark(marker)
    body = json.dumps({"parameters": {"config": config, "file:1/model.py": base64.b64encode(source).decode()}}).encode()
    status, answer = http(server, "POST", "/repository/models/intruder/load", body)
    assert status == 403 and b"This API is restricted" in answer
    with pytest.raises(InferenceServerException, match="This protocol is restricted") as e:
        grpc.load_model("intruder", config=config, files={"file:1/model.py": source})
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    assert not marker.exists()
    index = grpc.get_model_repository_index(headers=access.grpc_headers(KEY), as_json=True)["models"]
    assert "intruder" not in {m["name"] for m in index}


def test_admin_apis_refuse_calls_without_the_key(server, grpc):
    ensemble = MODELS[0]
    refused = [
        ("POST", "/repository/index", b""),
        ("POST", f"/repository/models/{ensemble}/unload", b"{}"),
        ("POST", f"/repository/models/{ensemble}/load", b"{}"),
        ("GET", f"/models/{ensemble}/config", None),
        ("GET", "/logging", None),
        ("POST", "/logging", b'{"log_verbose_level": 2}'),
        ("GET", "/trace/setting", None),
        ("POST", "/trace/setting", b'{"trace_file": "/tmp/stylize-trace.json"}'),
        ("GET", "/systemsharedmemory/status", None),
        ("POST", "/systemsharedmemory/region/r/register", b'{"key": "/x", "offset": 0, "byte_size": 8}'),
    ]
    for method, path, body in refused:
        status, answer = http(server, method, path, body)
        assert status == 403 and access.ADMIN_HEADER.encode() in answer, (method, path, status, answer)
        status, _ = http(server, method, path, body, key="wrong-" + KEY)
        assert status == 403, (method, path)
    calls = {
        "index": lambda **k: grpc.get_model_repository_index(**k),
        "unload": lambda **k: grpc.unload_model(ensemble, **k),
        "config": lambda **k: grpc.get_model_config(ensemble, **k),
        "logging": lambda **k: grpc.update_log_settings({"log_verbose_level": 2}, **k),
        "trace": lambda **k: grpc.get_trace_settings(**k),
        "shared memory": lambda **k: grpc.register_system_shared_memory("r", "/x", 8, **k),
    }
    for name, call in calls.items():
        with pytest.raises(InferenceServerException, match="This protocol is restricted") as e:
            call()
        assert e.value.status() == "StatusCode.UNAVAILABLE", name
    assert grpc.is_model_ready(ensemble)  # nothing above reached the server's state


def test_inference_health_metadata_and_statistics_need_no_key(server, grpc):
    ensemble = MODELS[0]
    assert http(server, "GET", "/health/ready")[0] == 200
    assert http(server, "GET", f"/models/{ensemble}")[0] == 200
    assert http(server, "GET", f"/models/{ensemble}/stats")[0] == 200
    with StylizeClient(url=server.grpc_url, admin_key="") as client:
        out = client.infer(real_photo_crop(24, 32), ensemble)
    assert out.shape == (48, 64, 3)


# ---- with the key -----------------------------------------------------------------------------------------------


def test_admin_apis_work_with_the_key(server, grpc):
    headers = access.grpc_headers(KEY)
    assert http(server, "POST", "/repository/index", b"", key=KEY)[0] == 200
    assert json.loads(http(server, "GET", f"/models/{MODELS[0]}/config", key=KEY)[1])["name"] == MODELS[0]
    assert http(server, "POST", "/logging", b'{"log_verbose_level": 0}', key=KEY)[0] == 200
    assert http(server, "GET", "/trace/setting", key=KEY)[0] == 200
    region = shared_memory.SharedMemory(create=True, size=64)
    try:
        body = json.dumps({"key": f"/{region.name}", "offset": 0, "byte_size": 64}).encode()
        assert http(server, "POST", "/systemsharedmemory/region/stylize_test/register", body, key=KEY)[0] == 200
        assert b"stylize_test" in http(server, "GET", "/systemsharedmemory/status", key=KEY)[1]
        assert http(server, "POST", "/systemsharedmemory/region/stylize_test/unregister", b"", key=KEY)[0] == 200
    finally:
        region.close()
        region.unlink()
    # explicit model control, with the key: unload and load again
    video = MODELS[1]
    grpc.unload_model(video, headers=headers)
    assert not grpc.is_model_ready(video)
    grpc.load_model(video, headers=headers)
    assert grpc.is_model_ready(video)


# ---- the SDK ----------------------------------------------------------------------------------------------------


def test_sdk_lists_checks_and_runs_frames_without_the_key(server, grpc, model_repository):
    index = grpc.get_model_repository_index(headers=access.grpc_headers(KEY), as_json=True)["models"]
    ready = sorted(int(m["version"]) for m in index if m["name"] == "basicvsr_x4_net" and m["state"] == "READY")
    # the newest two on disk are served (a fresh clone's build has one)
    on_disk = sorted(int(p.name) for p in (model_repository / "basicvsr_x4_net").iterdir() if p.name.isdigit())
    with StylizeClient(url=server.grpc_url, admin_key="") as client:
        infos = {m.id: m for m in client.models()}
        assert set(infos) == set(MODELS)
        assert all(m.ready and m.weights == "?" for m in infos.values())  # the weights status is in the config
        assert list(infos["basicvsr_x4"].versions) == ready == on_disk[-2:]
        assert infos["basicvsr_x4"].task == "vsr" and infos["animevideo_x2"].scale == 2
        health = client.health()
        assert health.ok and health.error is None
        assert health.models["animevideo_x2/1"] == "READY"
        assert [health.models[f"basicvsr_x4_net/{v}"] for v in ready] == ["READY"] * len(ready)
        desc = REGISTRY["basicvsr_x4"]
        frames = np.stack([real_photo_crop(20, 24) for _ in range(desc.window)])
        out = client.infer_frames(frames, "basicvsr_x4")  # batch limit and window from the metadata API
        assert out.shape == (desc.window, 80, 96, 3) and out.dtype == np.uint8


def test_sdk_with_the_key_reads_the_configs_and_a_wrong_key_is_not_retried(server):
    with StylizeClient(url=server.grpc_url, admin_key=KEY) as client:
        infos = {m.id: m for m in client.models()}
        assert {m.weights for m in infos.values()} == {"real"}  # what this repository's configs say
        assert client.health().models["request_check/1"] == "READY"
    with StylizeClient(url=server.grpc_url, admin_key="wrong-" + KEY) as client:
        with pytest.raises(AccessDenied, match="admin key"):
            client.models()
        assert client.stats.retries == 0 and client.stats.errors == {"access_denied": 1}


# ---- bad raw frames ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["basicvsr_x4", "basicvsr_x4_net"])
@pytest.mark.parametrize("hw", [(0, 0), (0, 32)])
def test_empty_frames_are_invalid_argument(server, grpc, model, hw):
    desc = REGISTRY["basicvsr_x4"]
    t = grpcclient.InferInput(desc.net_input.name, [1, desc.window, *hw, 3], "UINT8")
    t.set_data_from_numpy(np.zeros((1, desc.window, *hw, 3), np.uint8))
    with pytest.raises(InferenceServerException, match="empty axis") as e:  # was INTERNAL from inside the graph
        grpc.infer(model, [t])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert grpc.is_server_ready() and grpc.is_model_ready(model)
