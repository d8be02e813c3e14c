"""stylize.server.launcher without starting a server: settings, ports, backend directory, stub environment, logs."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import pytest
from stylize.commands.serve import _SERVE_ARGS, add_serve_arguments
from stylize.contract import access
from stylize.engine.ort_runner import ORT_THREADS_ENV
from stylize.engine.ov_runner import OV_CACHE_ENV
from stylize.server import launcher
from stylize.server.errors import ModelRepositoryError, StubEnvironmentError, TritonNotFoundError
from stylize.server.install import (
    ORT_BACKEND_MODEL,
    _stylize_search_path,
    check_stub_environment,
    find_tritonserver,
    missing_libraries,
    missing_stub_libraries,
    prepare_backend_directory,
    python_based_backends,
    server_environment,
)
from stylize.server.launcher import check_repository, model_failures_from_log
from stylize.server.settings import ServerSettings, find_free_ports, parse_size, port_is_free
from stylize.server.supervisor import banner

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def install():
    try:
        found = find_tritonserver()
    except TritonNotFoundError as e:
        pytest.skip(f"no tritonserver: {e}")
    if not found.embedded:
        pytest.skip("tritonserver on PATH (NGC container): no backend directory to assemble")
    return found


# ---- settings -------------------------------------------------------------------------------------------------


def test_settings_from_env_then_overrides(tmp_path):
    env = {
        "STYLIZE_MODEL_REPOSITORY": str(tmp_path / "repo"),
        "STYLIZE_GRPC_PORT": "9001",
        "STYLIZE_HTTP_PORT": "9000",
        "STYLIZE_METRICS_PORT": "9002",
        "STYLIZE_CACHE_SIZE": "256M",
        "STYLIZE_ORT_THREADS": "2",
        "STYLIZE_STRICT_READINESS": "false",
        "STYLIZE_CACHE": str(tmp_path / "cache"),
        "STYLIZE_TRITON_ARGS": "--log-info=true --model-load-thread-count=2",
        "UNRELATED": "x",
    }
    s = ServerSettings.from_env(env, http_port=None, grpc_port=9101)
    assert s.model_repository == tmp_path / "repo"
    assert (s.grpc_port, s.http_port, s.metrics_port) == (9101, 9000, 9002)
    assert s.cache_size == 256 << 20
    assert s.ort_threads == 2 and s.strict_readiness is False
    assert s.cache_dir == tmp_path / "cache"
    assert s.extra_args == ("--log-info=true", "--model-load-thread-count=2")


def test_settings_defaults_and_validation():
    s = ServerSettings.from_env({})
    assert (s.grpc_port, s.http_port, s.metrics_port, s.cache_size, s.strict_readiness) == (8001, 8000, 8002, 0, True)
    assert s.model_repository == Path("model_repository")
    with pytest.raises(ValueError, match="STYLIZE_GRPC_PORT='x'"):
        ServerSettings.from_env({"STYLIZE_GRPC_PORT": "x"})
    with pytest.raises(ValueError, match="must differ"):
        ServerSettings(grpc_port=8000, http_port=8000)
    with pytest.raises(ValueError, match="outside"):
        ServerSettings(http_port=70000)
    with pytest.raises(TypeError, match="unknown server setting"):
        ServerSettings.from_env({}, grcp_port=1)


@pytest.mark.parametrize(
    "text, size",
    [("0", 0), ("1048576", 1 << 20), ("256M", 256 << 20), ("256MiB", 256 << 20), ("1g", 1 << 30), ("64 KB", 64 << 10)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_refuses_nonsense():
    with pytest.raises(ValueError):
        parse_size("lots")


def test_serve_arguments_map_onto_settings(tmp_path):
    parser = add_serve_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--model-repository",
            str(tmp_path),
            "--grpc-port",
            "7001",
            "--cache-size",
            "1M",
            "--ort-threads",
            "3",
            "--triton-arg=--log-info=false",
        ]
    )
    s = ServerSettings.from_env({}, **{k: getattr(args, k) for k in _SERVE_ARGS})
    assert (s.model_repository, s.grpc_port, s.http_port, s.cache_size, s.ort_threads) == (
        tmp_path,
        7001,
        8000,
        1 << 20,
        3,
    )
    assert s.extra_args == ("--log-info=false",)


def test_serve_binds_loopback_unless_told_and_says_where_it_is_bound():
    parser = add_serve_arguments(argparse.ArgumentParser())

    def settings(*argv):
        args = parser.parse_args(list(argv))
        return ServerSettings.from_env({}, **{k: getattr(args, k) for k in _SERVE_ARGS})

    assert settings().address == "127.0.0.1"
    assert settings("--host", "0.0.0.0").address == settings("--address", "0.0.0.0").address == "0.0.0.0"
    assert ServerSettings.from_env({"STYLIZE_ADDRESS": "0.0.0.0"}).address == "0.0.0.0"
    text = banner(settings(), ["m"], pid=1, log_path=Path("x.log"))
    assert "bound to 127.0.0.1 (this machine only)" in text and "gRPC     127.0.0.1:8001" in text
    text = banner(settings("--host", "0.0.0.0"), ["m"], pid=1, log_path=Path("x.log"))
    assert "bound to 0.0.0.0 (all interfaces)" in text and "gRPC     0.0.0.0:8001" in text
    assert "http://0.0.0.0:8000" in text and "127.0.0.1" not in text


def test_admin_key_setting_is_checked_and_never_shown(install):
    key = "k" * 8 + "-secret-" + "9" * 8
    s = ServerSettings.from_env({"STYLIZE_ADMIN_KEY": key})
    assert s.admin_key == key and key not in repr(s)
    with pytest.raises(ValueError, match="at least 16") as e:
        ServerSettings.from_env({"STYLIZE_ADMIN_KEY": "short"})
    assert "short" not in str(e.value)
    server = launcher.TritonServer(s)
    assert server.admin_key == key
    assert [a for a in server.command() if "restricted" in a] == access.restriction_args(key)
    assert "model-repository,model-config,shared-memory,logging,trace:stylize-admin-key=" + key in " ".join(
        server.command()
    )
    assert key not in banner(s, [], pid=1, log_path=Path("x.log"))
    # without a key: a random one per server, different each time
    a, b = launcher.TritonServer(ServerSettings.from_env({})), launcher.TritonServer(ServerSettings.from_env({}))
    assert a.admin_key != b.admin_key and len(a.admin_key) >= 32
    # the python stubs do not inherit it
    assert access.ADMIN_KEY_ENV not in server_environment(install, base={access.ADMIN_KEY_ENV: key, "PATH": "/bin"})


# ---- ports and repository -------------------------------------------------------------------------------------


def test_local_settings_use_free_loopback_ports(tmp_path):
    s = ServerSettings.local(tmp_path, cache_size=5)
    assert s.address == "127.0.0.1" and s.client_host == "127.0.0.1" and s.cache_size == 5
    assert all(port_is_free(p, "127.0.0.1") for p in (s.grpc_port, s.http_port, s.metrics_port))


def test_free_ports_and_taken_ports():
    ports = find_free_ports(3)
    assert len(set(ports)) == 3
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))
        s.listen()
        assert not port_is_free(ports[0], "127.0.0.1")
        assert not port_is_free(ports[0], "0.0.0.0")
    assert port_is_free(ports[0], "127.0.0.1")


def test_repository_checks(tmp_path):
    with pytest.raises(ModelRepositoryError, match="does not exist"):
        check_repository(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelRepositoryError, match="not a directory"):
        check_repository(tmp_path / "file")
    repo = tmp_path / "repo"
    (repo / ".hidden" / "1").mkdir(parents=True)
    (repo / "notes").mkdir()
    with pytest.raises(ModelRepositoryError, match="holds no models"):
        check_repository(repo)
    (repo / "a" / "1").mkdir(parents=True)
    (repo / "b").mkdir()
    (repo / "b" / "config.pbtxt").write_text('backend: "python"')
    assert check_repository(repo) == ["a", "b"]


def test_model_failures_from_triton_log_lines():
    lines = [
        'I1121 23:41:40.1 1 model_lifecycle.cc:472] "loading: echo:1"\n',
        "E1121 23:41:41.2 1 model_lifecycle.cc:642] \"failed to load 'net' version 1: Internal: ModelConfigError: "
        "config input 'IMAGE' is not in the ONNX graph\\n\\nAt:\\n  /x/model.py(30): initialize\\n\"\n",
        "E1121 23:41:41.3 1 model_lifecycle.cc:642] \"failed to load 'pre' version 2: Invalid argument: "
        'unexpected \'backend\' \\"pyton\\""\n',
    ]
    assert model_failures_from_log(lines) == {
        "net": "Internal: ModelConfigError: config input 'IMAGE' is not in the ONNX graph",
        "pre": "Invalid argument: unexpected 'backend' \"pyton\"",
    }


def test_unreadable_model_directories_are_named_with_the_reason():
    # what Triton 2.51 run as uid 1000 logged for a repository whose files were 0600 (issue 18)
    lines = [
        'E1201 09:25:08.808834 19319 model_repository_manager.cc:1460] "Poll failed for model directory '
        "'animevideo_x2': failed to open text file for read /r/animevideo_x2/config.pbtxt: Permission denied\"\n"
    ]
    assert model_failures_from_log(lines) == {
        "animevideo_x2": "failed to open text file for read /r/animevideo_x2/config.pbtxt: Permission denied"
    }


# ---- backend directory and stub environment -------------------------------------------------------------------


def test_backend_directory_is_assembled_once_and_repaired(install, tmp_path):
    first = prepare_backend_directory(install, tmp_path)
    lib = first / "python" / "libtriton_python.so"
    stub = first / "python" / "triton_python_backend_stub"
    model = first / "onnxruntime" / "model.py"
    # the library must be a real file inside the directory (Triton rejects a python-based backend whose library
    # resolves elsewhere); the stub is a symlink so its $ORIGIN RPATH still finds the wheel's libraries
    assert lib.is_file() and not lib.is_symlink()
    assert stub.is_symlink() and os.access(stub.resolve(), os.X_OK)
    assert model.resolve() == ORT_BACKEND_MODEL
    # every Python-based backend the package ships, by the name configs use: backend "onnxruntime" / "openvino"
    assert set(python_based_backends()) == {"onnxruntime", "openvino"}
    for name, source in python_based_backends().items():
        assert (first / name / "model.py").resolve() == source
    inode = lib.stat().st_ino
    assert prepare_backend_directory(install, tmp_path) == first
    assert lib.stat().st_ino == inode  # reused, not rebuilt

    stub.unlink()  # a damaged directory is rebuilt in place
    assert prepare_backend_directory(install, tmp_path) == first
    assert stub.is_symlink()
    assert [p.name for p in (tmp_path / "backends").iterdir()] == [first.name]  # no staging leftovers


def test_server_environment_points_the_stub_at_this_venv(install):
    env = server_environment(install, ort_threads=3, base={"PATH": "/usr/bin", "PYTHONPATH": "/somewhere"})
    path = env["PATH"].split(os.pathsep)
    assert Path(path[0]) / "python3" == Path(sys.executable).parent / "python3"
    pythonpath = env["PYTHONPATH"].split(os.pathsep)
    assert str(_stylize_search_path()) == pythonpath[0] and pythonpath[-1] == "/somewhere"
    assert str(install.libs) in env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert env[ORT_THREADS_ENV] == "3"
    cached = server_environment(install, ov_cache=Path("/cache/openvino"), base={"PATH": "/usr/bin"})
    assert cached[OV_CACHE_ENV] == "/cache/openvino"
    mine = server_environment(install, ov_cache=Path("/cache/openvino"), base={OV_CACHE_ENV: "off"})
    assert mine[OV_CACHE_ENV] == "off"  # the caller's own setting wins


def test_stub_environment_check_sees_numpy_1(install):
    info = check_stub_environment(server_environment(install), stub=install.python_stub)
    assert info["numpy"].startswith("1.")
    assert info["stylize"] and info["onnxruntime"] and info["openvino"]


def test_a_stub_whose_library_is_missing_is_refused_naming_the_package(tmp_path, monkeypatch):
    """A plain Debian 12 has Python 3.11 but not libpython3.11.so.1.0, which the wheel's stub links: then every
    python model fails to load with only the loader's line in Triton's log. The launcher asks the dynamic loader
    first and says what to install. Here a real executable linked to a library of its own, then removed (this
    machine has libpython3.11 itself, so a unique soname stands in for it in the package table)."""
    import shutil
    import subprocess

    from stylize.server import install as install_module

    if not (shutil.which("gcc") and shutil.which("ldd")):
        pytest.skip("needs gcc and ldd to link a test executable")
    assert install_module._LIBRARY_PACKAGES["libpython3.11.so.1.0"] == "libpython3.11"
    soname = "libstylize-test-gone.so.1"
    monkeypatch.setitem(install_module._LIBRARY_PACKAGES, soname, "libstylize-test-gone1")
    (tmp_path / "lib.c").write_text("int gone(void) { return 1; }\n")
    (tmp_path / "main.c").write_text("int gone(void);\nint main(void) { return gone(); }\n")
    lib = tmp_path / soname
    subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", lib, tmp_path / "lib.c"], check=True)
    stub = tmp_path / "triton_python_backend_stub"
    subprocess.run(["gcc", "-o", stub, tmp_path / "main.c", lib], check=True)
    env = {"PATH": os.environ["PATH"], "LD_LIBRARY_PATH": str(tmp_path)}
    assert missing_stub_libraries(stub, env) == []  # found where it is
    lib.unlink()
    assert missing_stub_libraries(stub, env) == [soname]
    # the wheel's own stub is execute-only (ldd cannot read it): then the loader is asked for its libpython
    assert missing_libraries([soname, "libc.so.6"], env) == [soname]
    with pytest.raises(
        StubEnvironmentError, match=r"cannot load libstylize-test-gone\.so\.1.*apt-get install libstylize"
    ):
        check_stub_environment(env, stub=stub)


def test_stub_environment_check_refuses_numpy_2(install, tmp_path):
    shadow = tmp_path / "shadow" / "numpy"  # a numpy 2 placed first on the stub's path
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('__version__ = "2.1.3"\n')
    env = server_environment(install)
    env["PYTHONPATH"] = f"{shadow.parent}{os.pathsep}{env['PYTHONPATH']}"
    with pytest.raises(StubEnvironmentError, match="numpy 2.1.3.*numpy<2"):
        check_stub_environment(env)


def test_a_tensorrt_repository_is_refused_with_where_it_runs(tmp_path):
    """The embedded server has only the python backend: a --trt repository would fail obscurely at load."""
    from stylize.contract.descriptors import REGISTRY
    from stylize_build.tensorrt import trt_config

    desc = REGISTRY["animevideo_x4"]
    repo = tmp_path / "repo"
    (repo / desc.trt_model / "1").mkdir(parents=True)
    (repo / desc.trt_model / "config.pbtxt").write_text(trt_config(desc, weights_status="real"))
    (repo / desc.id / "1").mkdir(parents=True)
    (repo / desc.id / "config.pbtxt").write_text('platform: "ensemble"')
    with pytest.raises(ModelRepositoryError, match=rf"TensorRT plans \({desc.trt_model}\).*NVIDIA's container"):
        check_repository(repo)


def test_the_terminal_shows_real_errors_not_the_cpu_only_noise_of_a_healthy_start():
    from stylize.server.launcher import worth_echoing

    noise = [
        'E1201 10:07:22.2 1 server.cc:241] "CudaDriverHelper has not been initialized."\n',
        'E1201 10:07:22.2 1 ensemble_scheduler.cc:1468] "unable to create stream for esrgan_x4: CUDA driver '
        'version is insufficient for CUDA runtime version"\n',
        'I1201 10:07:22.2 1 server.cc:674] "model esrgan_x4 READY"\n',
        'W1201 10:07:29.3 1 pinned_memory_manager.cc:170] "failed to allocate pinned system memory"\n',
        "\n",
        "+------------------+------+\n",
        "| animevideo_x2        | 1       | READY  |\n",
    ]
    real = [
        'E1201 10:07:22.2 1 model_repository_manager.cc:703] "Invalid argument: ensemble animevideo_x2 '
        'contains models that are not available or ambiguous: animevideo_x2_cached"\n',
        "Traceback (most recent call last):\n",
    ]
    assert [worth_echoing(x) for x in noise] == [False] * len(noise)
    assert [worth_echoing(x) for x in real] == [True] * len(real)


def test_stylize_serve_turns_a_bounded_response_cache_on_unless_told(monkeypatch):
    from stylize.commands.serve import DEFAULT_SERVE_CACHE, serve_cache_size
    from stylize.server.settings import ServerSettings

    monkeypatch.delenv("STYLIZE_CACHE_SIZE", raising=False)
    assert serve_cache_size(None) == DEFAULT_SERVE_CACHE == 256 * 1024 * 1024
    assert serve_cache_size(0) == 0  # --cache-size 0 disables it
    monkeypatch.setenv("STYLIZE_CACHE_SIZE", "1G")
    assert serve_cache_size(None) is None  # the environment's value, read by from_env
    assert ServerSettings.from_env(model_repository="r", cache_size=serve_cache_size(None)).cache_size == 1 << 30
    assert ServerSettings(model_repository="r").cache_size == 0  # tests and benchmarks: no cache unless asked
