"""The server as the pod runs it: the image copies the repository `stylize build` wrote (owned by root) and runs
tritonserver as uid 1000 (k8s/image/Dockerfile). Here root builds a repository and the real tritonserver runs as a
user that owns nothing, so it reads only what is readable by everyone: every model must load and serve."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stylize.contract.descriptors import REGISTRY
from stylize.engine.photos import real_photo_crop
from stylize.server.launcher import repository_models, start_local

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(os.geteuid() != 0, reason="starting the server as another user needs root"),
]

MODEL = "animevideo_x2"  # the fastest image model to export and to serve
NOBODY = 65534  # in no group of the files here: it gets the "other" permissions, as uid 1000 gets in the image


@pytest.fixture
def public_dir():
    """pytest's tmp_path lies under /tmp/pytest-of-root (0700), which the server user could not even enter; the
    image's /models is reachable, so this folder is too."""
    d = Path(tempfile.mkdtemp(prefix="stylize-non-root-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server_python(public_dir, monkeypatch):
    """A Python the server user can run, as the image has one (/opt/stylize/venv on the system python3.11).

    The python stub runs isolated (PYTHONPATH ignored): it adopts the first ``python3`` on PATH that it can execute
    and that interpreter's venv. This machine's venv links an interpreter under /root (0700), which the server user
    cannot execute; so a venv on a system interpreter of the same minor version, whose .pth puts this venv's
    packages and the stylize sources on sys.path, goes on PATH right after it (the launcher puts this venv first)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = next(
        (
            c
            for c in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}")
            if os.path.exists(c)
            and subprocess.run([c, "-c", ""], user=NOBODY, group=NOBODY, extra_groups=[]).returncode == 0
        ),
        None,
    )
    if base is None:
        pytest.skip(f"no Python {version} that uid {NOBODY} can run (the stub needs one)")
    venv = public_dir / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    import stylize

    paths = [*site.getsitepackages(), str(Path(stylize.__file__).resolve().parents[1])]
    (venv / "lib" / f"python{version}" / "site-packages" / "stylize-project.pth").write_text("\n".join(paths) + "\n")
    monkeypatch.setenv("PATH", f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return venv


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_a_non_root_server_loads_and_serves_every_model(public_dir, server_python):
    from stylize.sdk.client import StylizeClient
    from stylize_build.repository import BuildSettings, build_repository

    desc = REGISTRY[MODEL]
    repo = public_dir / "model_repository"
    old = os.umask(0o077)  # a private umask on the build machine must not make a private repository
    try:
        build_repository([desc], BuildSettings(repository=repo))
    finally:
        os.umask(old)
    assert sorted(repository_models(repo)) == sorted(desc.triton_models)

    with start_local(repo, run_as=(NOBODY, NOBODY), cache_dir=public_dir / "cache") as server:
        assert _uid_of(server.pid) == NOBODY
        states = {m["name"]: m.get("state") for m in server.repository_index()}
        assert states == {name: "READY" for name in desc.triton_models}
        photo = real_photo_crop(37, 50)
        with StylizeClient(url=server.grpc_url) as client:
            out = client.infer(photo, MODEL)
    assert out.shape == (37 * desc.scale, 50 * desc.scale, 3) and out.dtype == np.uint8
    small = np.asarray(Image.fromarray(out).resize((50, 37), Image.BICUBIC), dtype=np.float32)
    assert np.abs(small - photo).mean() < 12  # an upscaler keeps the picture
