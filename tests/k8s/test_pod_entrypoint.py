"""The pod's /dev/shm is an emptyDir: it outlives container restarts. A tritonserver killed by a signal leaves its
python backend's shared-memory regions there, and a container that starts tritonserver directly adds its own next
to them at every restart. The Deployment's entrypoint (stylize.server.entrypoint) removes them first.

Here each start of the server container is the real tritonserver in a PID namespace of its own (the entrypoint,
then tritonserver, is its PID 1, as in a container: SIGKILL of PID 1 takes every process of the namespace with it,
as the runtime does on a container crash) with a tmpfs of this test mounted on /dev/shm (the pod's memory-backed
emptyDir, which the kubelet mounts into each new container of the pod)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from k8s_helpers import flag, one, render, server_container

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.triton,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare"),
        reason="a container's PID and mount namespace need root and unshare(1)",
    ),
]

POD_PYTHON = "/opt/stylize/venv/bin/python"  # the image's venv (k8s/image/Dockerfile)
POD_TRITON = "/opt/tritonserver/bin/tritonserver"
# flags the launcher sets itself (ports of its own, a repository here, a key of its own for the restricted APIs)
# and the cache (the launcher adds the wheel's cache directory to it)
OWNED = (
    "model-repository",
    "http-port",
    "grpc-port",
    "metrics-port",
    "http-restricted-api",
    "grpc-restricted-protocol",
    "cache-config",
)

ECHO = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN")
                                                            .as_numpy() + 1)]) for r in requests]
"""


def _repository(root: Path) -> Path:
    """Two python model instances: two stubs, each with its shared-memory region in /dev/shm."""
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "1" / "model.py").write_text(ECHO)
    (root / "echo" / "config.pbtxt").write_text(
        textwrap.dedent("""\
        name: "echo"
        backend: "python"
        max_batch_size: 0
        input [ { name: "IN", data_type: TYPE_INT32, dims: [ 4 ] } ]
        output [ { name: "OUT", data_type: TYPE_INT32, dims: [ 4 ] } ]
        instance_group [ { count: 2, kind: KIND_CPU } ]
        """)
    )
    return root


@pytest.fixture
def dshm(tmp_path):
    """The pod's dshm volume: a tmpfs (medium: Memory) that lives longer than any one container."""
    d = tmp_path / "dshm"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(d)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield d
    subprocess.run(["umount", "-l", str(d)])


class Container:
    """One start of the server container: ``command`` run as PID 1 of a new PID namespace, /dev/shm = ``dshm``."""

    def __init__(self, command: list[str], env: dict[str, str], dshm: Path, log: Path, http_port: int):
        self.http_port = http_port
        self.log = log
        script = f'mount --bind "{dshm}" /dev/shm && exec "$@"'
        with open(log, "w") as out:
            self.unshare = subprocess.Popen(
                [
                    "unshare",
                    "--pid",
                    "--fork",
                    "--mount",
                    "--mount-proc",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                    *command,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while not (kids := Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children").read_text().split()):
            assert time.monotonic() < deadline and self.unshare.poll() is None, log.read_text()
            time.sleep(0.02)
        self.pid1 = int(kids[0])  # the namespace's PID 1, seen from here

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.unshare.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int) -> int:
        os.kill(self.pid1, sig)
        return self.unshare.wait(timeout=120)

    def infer(self) -> list[int]:
        import json

        body = json.dumps({"inputs": [{"name": "IN", "shape": [4], "datatype": "INT32", "data": [1, 2, 3, 4]}]})
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/v2/models/echo/infer",
            body.encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["outputs"][0]["data"]


def _regions(dshm: Path) -> set[str]:
    return {p.name for p in dshm.glob("triton_*_backend_shm_region_*")}


def _named_by_a_process(names: set[str]) -> set[str]:
    """Which of the regions a living process on this machine still names on its command line (a python stub)."""
    found = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                found |= names & set(p.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0"))
            except OSError:
                pass
    return found


def test_the_entrypoint_removes_what_a_killed_server_left_in_the_pods_shm(tmp_path, dshm):
    from stylize.server import launcher
    from stylize.server.errors import TritonNotFoundError
    from stylize.server.install import find_tritonserver, server_environment
    from stylize.server.settings import ServerSettings

    c = server_container(one(render("overlays/cpu"), "Deployment", "triton"))
    assert c["command"] == [POD_PYTHON, "-m", "stylize.server.entrypoint", POD_TRITON]
    assert "/dev/shm" in {m["mountPath"] for m in c["volumeMounts"]}
    try:
        settings = ServerSettings.local(
            _repository(tmp_path / "repo"),
            cache_dir=tmp_path / "cache",
            cache_size=int(flag(c["args"], "cache-config")[0].split("size=")[1]),
            extra_args=tuple(a for a in c["args"] if not any(a.startswith(f"--{o}=") for o in OWNED)),
        )
        server = launcher.TritonServer(settings)
        server.install = find_tritonserver()
    except TritonNotFoundError as e:  # pragma: no cover - the `server` extra is missing
        pytest.skip(f"no tritonserver binary: {e}")
    # the Deployment's args (its python backend shm options among them), with this machine's binary and python
    triton = server.command()
    assert flag(triton, "backend-config") == flag(c["args"], "backend-config")
    env = server_environment(server.install, ov_cache=tmp_path / "cache" / "openvino")
    pod = [sys.executable, "-m", "stylize.server.entrypoint", *triton]

    def start(command: list[str], n: int) -> Container:
        box = Container(command, env, dshm, tmp_path / f"container-{n}.log", settings.http_port)
        box.wait_ready()
        return box

    # 1st container (the pod's command): serves, makes its regions, then is OOM-killed (SIGKILL, no drain)
    first = start(pod, 1)
    assert Path(f"/proc/{first.pid1}/exe").resolve() == Path(triton[0]).resolve()  # exec'd: tritonserver is PID 1
    assert first.infer() == [2, 3, 4, 5]
    leaked = _regions(dshm)
    assert len(leaked) >= 2, "the python stubs made no shared-memory region in the pod's /dev/shm"
    first.stop(9)
    assert not _named_by_a_process(leaked)  # its stubs died with the namespace: the regions are all that is left
    assert _regions(dshm) == leaked

    # what the Deployment did before (tritonserver as the command): a restart adds its regions to the old ones
    second = start(triton, 2)
    assert leaked < _regions(dshm), "the restarted server removed the old regions by itself"
    leaked = _regions(dshm)
    second.stop(9)

    # the pod's command after a crash: every leftover is gone, whatever its age, and the server serves
    third = start(pod, 3)
    assert Path(f"/proc/{third.pid1}/exe").resolve() == Path(triton[0]).resolve()
    now = _regions(dshm)
    assert now and not now & leaked, (now, leaked)
    assert third.infer() == [2, 3, 4, 5]
    log = (tmp_path / "container-3.log").read_text()
    assert f"removed {len(leaked)} shared-memory region(s)" in log, log[:2000]
    # a clean stop (the kubelet's SIGTERM) leaves nothing behind: only crashes leak
    assert third.stop(15) == 0, (tmp_path / "container-3.log").read_text()[-3000:]
    assert not _regions(dshm)
