"""The CPU server image serves the `<id>_net` networks on this project's Python-based backends (issue 13 #4): the
native OpenVINO backend of NVIDIA's container ignores ``max_request_pixels``, so the pod would run raw requests of
any size. The Dockerfile's server-cpu stage runs ``python -m stylize.server.install --python-based-backends``.

Here that line runs, as the Dockerfile writes it, on a backend directory laid out as the container's: the python
backend, and native ``openvino`` / ``onnxruntime`` folders whose library is not a loadable file (if it stayed in
place, Triton would try to load it and the model would fail). The real tritonserver then serves a network from
that directory: a raw request over the limit is refused, one within it is answered."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from stylize.contract.descriptors import REGISTRY
from stylize.server.install import find_tritonserver, prepare_backend_directory, python_based_backends
from stylize.server.launcher import start_local
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
NATIVE = {
    "openvino": "libtriton_openvino.so",
    "onnxruntime": "libtriton_onnxruntime.so",
    "tensorrt": "libtriton_tensorrt.so",
}


def _cpu_stage() -> str:
    text = (ROOT / "k8s" / "image" / "Dockerfile").read_text()
    return text.split("FROM server-base AS server-cpu", 1)[1].split("\nFROM ", 1)[0]


def _install_line() -> str:
    (line,) = re.findall(r"^RUN (.*-m stylize\.server\.install .*)$", _cpu_stage(), re.M)
    return line


def _container_backends(tmp_path: Path) -> Path:
    """A backend directory shaped as /opt/tritonserver/backends: the wheel's python backend, native folders."""
    assembled = prepare_backend_directory(find_tritonserver(), tmp_path / "cache")
    backends = tmp_path / "backends"
    backends.mkdir()
    shutil.copytree(assembled / "python", backends / "python", symlinks=True)
    for name, lib in NATIVE.items():
        (backends / name).mkdir()
        (backends / name / lib).write_bytes(b"not a shared library")
    return backends


def _run_install_line(backends: Path) -> subprocess.CompletedProcess:
    line = _install_line().replace('"$VIRTUAL_ENV/bin/python"', shlex.quote(sys.executable))
    line = line.replace("/opt/tritonserver/backends", shlex.quote(str(backends)))
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, cwd=ROOT)


def test_the_cpu_stage_installs_the_python_based_backends_as_root():
    stage = _cpu_stage()
    line = _install_line()
    assert "/opt/tritonserver/backends" in line
    assert stage.index(line) < stage.index("USER 1000:1000"), "it writes /opt: it must run before the server user"


def test_the_install_line_replaces_the_native_backends_and_keeps_them_aside(tmp_path):
    backends = _container_backends(tmp_path)
    out = _run_install_line(backends)
    assert out.returncode == 0, out.stderr
    for name, model in python_based_backends().items():
        assert sorted(p.name for p in (backends / name).iterdir()) == ["model.py"]
        assert (backends / name / "model.py").resolve() == model.resolve()
        assert (backends / f"{name}-native" / NATIVE[name]).is_file()
    assert (backends / "tensorrt" / NATIVE["tensorrt"]).is_file()  # not one of ours: untouched
    assert not (backends / "tensorrt-native").exists()
    again = _run_install_line(backends)  # a rebuilt layer runs it again: nothing changes
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in backends.iterdir()) == sorted(
        ["python", "tensorrt", *python_based_backends(), *(f"{n}-native" for n in python_based_backends())]
    )

    shutil.rmtree(backends / "python")
    refused = _run_install_line(backends)
    assert refused.returncode != 0 and "has no python backend" in refused.stderr


def test_a_network_served_from_that_directory_enforces_its_pixel_limit(tmp_path, model_repository):
    backends = _container_backends(tmp_path)
    assert _run_install_line(backends).returncode == 0
    desc = REGISTRY["animevideo_x2"]
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / desc.net_model).symlink_to((model_repository / desc.net_model).resolve(), target_is_directory=True)
    limit = desc.max_request_pixels
    with start_local(repo, backend_directory=backends) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        side = 256
        n = limit // (side * side) + 1
        big = grpcclient.InferInput(desc.net_input.name, [n, side, side, 3], desc.net_input.dtype)
        big.set_data_from_numpy(np.zeros((n, side, side, 3), np.uint8))
        with pytest.raises(InferenceServerException) as e:
            client.infer(desc.net_model, [big])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
        assert f"at most {limit:,}" in e.value.message()
        small = grpcclient.InferInput(desc.net_input.name, [1, 32, 32, 3], desc.net_input.dtype)
        small.set_data_from_numpy(np.full((1, 32, 32, 3), 128, np.uint8))
        out = client.infer(desc.net_model, [small]).as_numpy(desc.net_output.name)
        assert out.shape == (1, 32 * desc.scale, 32 * desc.scale, 3)
        assert client.is_server_ready() and client.is_model_ready(desc.net_model)
