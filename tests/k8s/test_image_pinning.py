"""Release images by digest, and the CPU image without CUDA: stylize_k8s.pin refuses a base image or a rendered
manifest image that has no digest; the Dockerfile's CPU target refuses a base that carries CUDA.

No registry and no Docker daemon are reachable here, so no digest is recorded and no image is built: these tests
check the mechanics (the gate refuses what is unpinned today and accepts a digest given in the kustomize way), and
run the CPU target's CUDA guard, as the Dockerfile writes it, against a CUDA-linked tritonserver and a plain binary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from k8s_helpers import K8S, kubectl
from stylize_k8s import pin


def _ldconfig() -> str:
    """ldconfig lives in /sbin, which a non-root user's PATH on Debian lacks."""
    return shutil.which("ldconfig") or shutil.which("ldconfig", path="/usr/sbin:/sbin") or "ldconfig"


pytestmark = pytest.mark.k8s

DIGEST = "sha256:" + "0123456789abcdef" * 4  # well-formed; no registry serves it


def test_ref_refuses_a_base_without_digest_and_gives_name_at_digest_with_one(tmp_path):
    lock = tmp_path / "base-images.json"
    lock.write_text(
        json.dumps(
            {
                "gpu": {"image": "nvcr.io/nvidia/tritonserver:24.10-py3", "digest": None},
                "cpu": {"image": None, "digest": None},
            }
        )
    )
    for key in ("gpu", "cpu", "missing"):
        with pytest.raises(pin.Unpinned):
            pin.ref(key, lock)
    lock.write_text(json.dumps({"gpu": {"image": "nvcr.io/nvidia/tritonserver:24.10-py3", "digest": "sha256:abc"}}))
    with pytest.raises(pin.Unpinned):  # not a sha256 digest
        pin.ref("gpu", lock)
    lock.write_text(json.dumps({"gpu": {"image": "nvcr.io/nvidia/tritonserver:24.10-py3", "digest": DIGEST}}))
    assert pin.ref("gpu", lock) == f"nvcr.io/nvidia/tritonserver:24.10-py3@{DIGEST}"


def test_the_recorded_gpu_base_is_the_image_the_dockerfile_names():
    text = (K8S / "image" / "Dockerfile").read_text()
    (default,) = re.findall(r"^ARG TRITON_IMAGE=(\S+)$", text, re.M)
    assert pin.load()["gpu"]["image"] == default
    # the documented builds take the base from the gate, never a bare tag
    builds = re.findall(r"docker build .*?\.$", text.replace("\\\n#", ""), re.M | re.S)
    assert builds and all('TRITON_IMAGE="$(python -m stylize_k8s.pin ref ' in b for b in builds), builds
    doc = (K8S.parent / "docs" / "k8s.md").read_text()
    assert "python -m stylize_k8s.pin record gpu" in doc and "python -m stylize_k8s.pin check" in doc


def test_the_release_gate_refuses_what_is_unpinned_today():
    """Blocked here: no digest can be asked of a registry, so the tracked state is refused, and says why."""
    problems = pin.problems([K8S / "overlays" / "cpu"])
    assert any("base image gpu" in p and "no digest" in p for p in problems), problems
    assert any("stylize-triton:0.1.0-triton24.10-cpu is not pinned" in p for p in problems), problems
    out = subprocess.run([sys.executable, "-m", "stylize_k8s.pin", "ref", "gpu"], capture_output=True, text=True)
    assert out.returncode == 1 and "no digest recorded" in out.stderr


def test_a_release_overlay_with_digests_passes_the_image_gate(tmp_path):
    """kustomize's `images: digest:` field: the rendered pods run name@digest, which the gate accepts; the same
    overlay with a tag is refused (real kubectl kustomize)."""
    mine = tmp_path / "release"
    mine.mkdir()
    cpu = os.path.relpath(K8S / "overlays" / "cpu", mine)
    entry = "{name: localhost:5000/stylize-triton, newName: registry.example.com/stylize-triton, %s}"
    (mine / "kustomization.yaml").write_text(f"resources: [{cpu}]\nimages: [{entry % ('digest: ' + DIGEST)}]\n")
    assert pin.rendered_images(mine) == [f"registry.example.com/stylize-triton@{DIGEST}"]
    lock = tmp_path / "base-images.json"
    lock.write_text(json.dumps({"cpu": {"image": "registry.example.com/tritonserver:24.10-cpu", "digest": DIGEST}}))
    assert pin.problems([mine], lock) == []
    (mine / "kustomization.yaml").write_text(f"resources: [{cpu}]\nimages: [{entry % 'newTag: 0.1.0'}]\n")
    assert len(pin.problems([mine], lock)) == 1
    assert kubectl()  # the project's kubectl rendered both


def _cuda_guard() -> str:
    text = (K8S / "image" / "Dockerfile").read_text()
    stage = text.split("FROM server-base AS server-cpu", 1)[1].split("\nFROM ", 1)[0]
    (run,) = re.findall(r"^RUN (if .*?fi)$", stage.replace("\\\n", " "), re.M | re.S)
    return run


def test_the_cpu_target_refuses_a_base_with_cuda():
    """The guard of the server-cpu stage, run here with /opt/tritonserver/bin/tritonserver pointed at the Triton
    2.51 binary of the nvidia-pytriton wheel, a CUDA build (it links libcudart), or at a binary without CUDA.
    This machine has a CUDA runtime (/usr/local/cuda-*, libcudart in the linker cache): the guard refuses it as it
    is; in a mount namespace that hides both, as a CPU-only base has neither, only the CUDA-linked server is refused."""
    from stylize.server.errors import TritonNotFoundError
    from stylize.server.install import find_tritonserver

    try:
        cuda_build = find_tritonserver().binary
    except TritonNotFoundError as e:
        pytest.skip(f"no tritonserver binary: {e}")
    guard = _cuda_guard()
    assert "/opt/tritonserver/bin/tritonserver" in guard
    plain = shutil.which("ls")

    def run(binary, *, hide_cuda: bool) -> subprocess.CompletedProcess:
        script = guard.replace("/opt/tritonserver/bin/tritonserver", str(binary))
        if not hide_cuda:
            return subprocess.run(["sh", "-c", script], capture_output=True, text=True)
        hide = "mount -t tmpfs tmpfs /usr/local && mount --bind /dev/null /etc/ld.so.cache && "
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide + script],
            capture_output=True,
            text=True,
        )

    has_cuda = (
        any(Path("/usr/local").glob("cuda*"))
        or "libcudart.so" in subprocess.run([_ldconfig(), "-p"], capture_output=True, text=True).stdout
    )
    if has_cuda:
        assert run(plain, hide_cuda=False).returncode == 1  # CUDA in the base itself
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("hiding this machine's CUDA needs root and unshare(1)")
    refused = run(cuda_build, hide_cuda=True)
    assert refused.returncode == 1 and "carries CUDA" in refused.stderr, refused
    allowed = run(plain, hide_cuda=True)
    assert allowed.returncode == 0, allowed
