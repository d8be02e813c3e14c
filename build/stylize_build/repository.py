"""Write the versioned Triton model repository from the descriptors.

Layout (every name derived from a descriptor)::

    model_repository/
      <id>/config.pbtxt  <id>/1/                      client-facing ensemble (response cache on)
      <id>_image/config.pbtxt <id>_image/1/model.py   python step: decode -> tiles through <id>_net (BLS) -> encode
      <id>_net/config.pbtxt  <id>_net/<N>/model.onnx  the network (uint8 in/out), N = 1, 2, ...
                             <id>_net/<N>/manifest.json

Versioned and idempotent: a build whose inputs (weights sha256, architecture, window, opset, export revision) match
an existing version rewrites nothing; new inputs make version N+1 and the version policy keeps N servable.
Every file is written atomically (temp file + rename), so an interrupted build never leaves a half-written model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

from stylize.descriptors import ModelDescriptor

from stylize.server.steps.imaging import Limits

from . import pbtxt
from .export import OPSET

EXPORT_REVISION = 2  # bump when the exported graph changes for the same weights (wrapper, opset, passes...)
# 2: PRelu rewritten as x + (a - 1) * min(x, 0) (graph_passes.rewrite_prelu); the x2/x3 bicubic downscale as a
#    polyphase convolution (export.BicubicDownscale)
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
LOCK_FILE = ".build.lock"  # hidden: Triton ignores it


@dataclass
class ModelResult:
    id: str
    net_version: int
    weights: str  # real | untrained
    reused: bool  # True: an identical version existed, nothing exported
    parity_max_abs: int | None
    written: list[str] = field(default_factory=list)  # files (re)written, relative to the repository


@dataclass
class BuildSettings:
    repository: Path
    weights: dict[str, Path] = field(default_factory=dict)  # model id -> checkpoint given with --weights
    threads: int = 2  # ONNX Runtime intra-op threads per instance (instances x threads <= cores)
    max_pixels: int = 16_777_216
    max_bytes: int = 64 * 1024 * 1024
    max_output_pixels: int = 67_108_864  # refuse requests whose output would be larger (8192 x 8192)
    tile_size: int | None = None  # image steps: tile side in input pixels (None: each descriptor's default)
    tile_overlap: int | None = None
    gpu: bool = False  # --trt: the ensembles route to the TensorRT plans (<id>_trt) instead of the ONNX models


def _atomic_write(path: Path, data: bytes) -> bool:
    """Write only if different; atomically. Returns True if the file changed."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def existing_versions(model_dir: Path) -> dict[int, dict]:
    """Version number -> manifest of the complete versions of a network model."""
    found = {}
    if model_dir.is_dir():
        for d in model_dir.iterdir():
            if d.is_dir() and d.name.isdigit() and (d / MANIFEST).is_file() and (d / ONNX_FILE).is_file():
                found[int(d.name)] = json.loads((d / MANIFEST).read_text())
    return found


def weights_identity(info) -> str:
    """sha256 over the weight files (or the seed of an untrained initialisation)."""
    if info.kind == "untrained":
        return f"untrained-seed-{info.seed}"
    return hashlib.sha256("".join(f.sha256 for f in info.files).encode()).hexdigest()


def fingerprint(desc: ModelDescriptor, weights_sha256: str) -> str:
    ident = {
        "arch": desc.arch, "arch_params": dict(desc.arch_params), "window": desc.window,
        "output_resize": desc.output_resize, "value_range": list(desc.value_range),
        "weights_sha256": weights_sha256, "opset": OPSET, "export_revision": EXPORT_REVISION,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _step_source(step: str) -> bytes:
    return resources.files("stylize.server.steps").joinpath(step, "model.py").read_bytes()


def build_model(desc: ModelDescriptor, settings: BuildSettings, *, log: Callable[[str], None] = lambda s: None
                ) -> ModelResult:
    from .export import export_onnx
    from .weights.loaders import load_weights

    repo = settings.repository
    net, info = load_weights(desc, settings.weights.get(desc.id))
    status = "untrained" if info.kind == "untrained" else "real"
    fp = fingerprint(desc, weights_identity(info))
    net_dir = repo / desc.net_model
    versions = existing_versions(net_dir)
    same = [v for v, m in versions.items() if m.get("fingerprint") == fp]
    written: list[str] = []
    if same:
        version, reused, parity_err = max(same), True, versions[max(same)].get("parity_max_abs")
        log(f"{desc.net_model}: version {version} is up to date")
    else:
        version, reused = max(versions, default=0) + 1, False
        log(f"{desc.net_model}: exporting version {version} ({status} weights)")
        staging = Path(tempfile.mkdtemp(dir=repo, prefix=f".{desc.net_model}.{version}."))
        try:
            report = export_onnx(desc, net, staging / ONNX_FILE)
            manifest = {
                "model": desc.net_model, "id": desc.id, "version": version, "fingerprint": fp,
                "weights": {"status": status, "sha256": weights_identity(info), **info.to_dict()},
                "arch": desc.arch, "arch_params": dict(desc.arch_params), "window": desc.window,
                "opset": report.opset, "parity_max_abs": report.parity_max_abs,
                "parity_input": report.parity_input, "export_seconds": round(report.seconds, 2),
                "git_commit": _git_commit(), "tools": _tool_versions(),
                "weights_license": desc.weights.license, "arch_license": desc.arch_license,
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            net_dir.mkdir(parents=True, exist_ok=True)
            os.replace(staging, net_dir / str(version))  # the version appears complete or not at all
            parity_err = report.parity_max_abs
            written += [f"{desc.net_model}/{version}/{ONNX_FILE}", f"{desc.net_model}/{version}/{MANIFEST}"]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        versions[version] = {}

    # Weights status of the newest servable version goes into every config of this descriptor.
    files: dict[str, bytes] = {
        f"{desc.net_model}/config.pbtxt": pbtxt.net_config(desc, weights_status=status, threads=settings.threads),
        f"{desc.id}/config.pbtxt": pbtxt.ensemble_config(
            desc, weights_status=status, net_model=desc.trt_model if settings.gpu else None),
    }
    (repo / desc.id / "1").mkdir(parents=True, exist_ok=True)  # ensembles need an (empty) version folder
    if not desc.window:
        limits = Limits(max_pixels=settings.max_pixels, max_bytes=settings.max_bytes,
                        max_output_pixels=settings.max_output_pixels)
        files[f"{desc.image_model}/config.pbtxt"] = pbtxt.image_config(
            desc, weights_status=status, net_model=desc.trt_model if settings.gpu else None, limits=limits,
            tile_size=settings.tile_size, tile_overlap=settings.tile_overlap, threads=settings.threads)
        files[f"{desc.image_model}/1/model.py"] = _step_source("image")
        written += _remove_legacy_steps(repo, desc)
    for rel, data in files.items():
        if _atomic_write(repo / rel, data.encode() if isinstance(data, str) else data):
            written.append(rel)
    return ModelResult(desc.id, version, status, reused, parity_err, written)


def _remove_legacy_steps(repo: Path, desc: ModelDescriptor) -> list[str]:
    """Repositories built before the single image step had ``<id>_pre``/``<id>_post``: Triton would still load
    them (two idle python stubs per model). Removed only if their config says they were made for this descriptor."""
    removed = []
    for name in (f"{desc.id}_pre", f"{desc.id}_post"):
        config = repo / name / "config.pbtxt"
        if config.is_file() and f'string_value: "{desc.id}"' in config.read_text(errors="replace"):
            shutil.rmtree(repo / name)
            removed.append(name)
    return removed


class RepositoryBusy(RuntimeError):
    pass


@contextmanager
def repository_lock(repo: Path, *, wait: bool = True):
    """One build at a time per repository (a second `stylize build` waits, it never interleaves)."""
    repo.mkdir(parents=True, exist_ok=True)
    with open(repo / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RepositoryBusy(f"another build is writing {repo}") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_repository(descs: Iterable[ModelDescriptor], settings: BuildSettings, *,
                     log: Callable[[str], None] = lambda s: None) -> list[ModelResult]:
    with repository_lock(settings.repository):
        for stale in settings.repository.glob(".*_*.*"):  # staging dirs of an interrupted build
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        return [build_model(d, settings, log=log) for d in descs]


def weights_status_of(repository: Path, desc: ModelDescriptor) -> str | None:
    versions = existing_versions(repository / desc.net_model)
    if not versions:
        return None
    return versions[max(versions)].get("weights", {}).get("status")


__all__ = ["BuildSettings", "ModelResult", "build_repository", "build_model", "existing_versions", "fingerprint",
           "EXPORT_REVISION", "OPSET"]
