"""Write the versioned Triton model repository from the descriptors.

Layout (every name derived from a descriptor)::

    model_repository/
      <id>/config.pbtxt  <id>/1/                      client-facing ensemble: request_check, then <id>_image
      request_check/config.pbtxt request_check/1/model.py   python step shared by the image ensembles: refuses
                                                      request parameters before the cached image step
      <id>_cached/config.pbtxt                        ensemble around <id>_image holding the response cache
      <id>_image/config.pbtxt <id>_image/1/model.py   python step: decode -> tiles through <id>_net's file, in process
                                                      (CPU; a BLS call to <id>_trt on GPU) -> encode
      <id>_net/config.pbtxt  <id>_net/<N>/model.onnx  the network (uint8 in/out), N = 1, 2, ...; backend openvino
                             <id>_net/<N>/manifest.json  (default) or onnxruntime (--cpu-runtime), fp32 or bf16

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
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

from stylize.contract.descriptors import REQUEST_CHECK_MODEL, ModelDescriptor
from stylize.contract.fileio import PUBLIC_DIR_MODE, PUBLIC_FILE_MODE, chmod_tree, make_dirs, write_atomic
from stylize.contract.provenance import git_commit
from stylize.contract.step import PRECISIONS, Limits

from . import pbtxt
from .export import OPSET

EXPORT_REVISION = 3  # bump when the exported graph changes for the same weights (wrapper, opset, passes...)
# 2: PRelu rewritten as x + (a - 1) * min(x, 0) (graph_passes.rewrite_prelu); the x2/x3 bicubic downscale as a
#    polyphase convolution (export.BicubicDownscale)
# 3: the output is permuted in float and cast to uint8 last (TensorRT: UINT8 only at graph inputs and outputs)
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
    served_version: int = 0  # the newest version: the one the step runs (model_version -1), which the labels describe
    served_weights: str = ""  # its weights status (what every config of the descriptor says)
    served_check: dict | None = None  # that version's check in the served runtime and precision (precision.py)


@dataclass
class BuildSettings:
    repository: Path
    weights: dict[str, Path | str] = field(default_factory=dict)  # model id -> --weights file or published name
    weights_dir: Path | None = None  # searched for published weights files by name (sources.resolve)
    threads: int = 2  # ONNX Runtime intra-op threads per instance (instances x threads <= cores)
    max_pixels: int = 16_777_216
    max_bytes: int = 64 * 1024 * 1024
    max_output_pixels: int = 67_108_864  # refuse requests whose output would be larger (8192 x 8192)
    tile_size: int | None = None  # image steps: tile side in input pixels (None: each descriptor's default)
    tile_overlap: int | None = None
    gpu: bool = False  # --trt: the ensembles route to the TensorRT plans (<id>_trt) instead of the ONNX models
    cpu_runtime: str = pbtxt.DEFAULT_CPU_RUNTIME  # the CPU networks' backend, and the image step's in-process runtime
    # OpenVINO's precision (INT8 graphs: of their float parts); None: bf16 where this CPU has it, else fp32
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.cpu_runtime not in pbtxt.CPU_RUNTIMES:
            raise ValueError(f"cpu_runtime {self.cpu_runtime!r}; expected one of {', '.join(pbtxt.CPU_RUNTIMES)}")
        if self.precision is None:
            from stylize.engine.ov_runner import default_precision

            self.precision = default_precision() if self.cpu_runtime == "openvino" else "fp32"
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.cpu_runtime == "onnxruntime" and self.precision != "fp32":
            raise ValueError(f"ONNX Runtime serves these networks in fp32 on CPU, not {self.precision}")

    @property
    def serving(self) -> dict[str, str]:
        """How the CPU networks are served: the keyword arguments of the pbtxt writers."""
        return {"runtime": self.cpu_runtime, "precision": self.precision}


def write_public(path: Path, data: bytes) -> bool:
    """Write only if different; atomically; 0644 in 0755 folders whatever the umask (the server reads the repository
    as another user: uid 1000 in the image). Returns True if the content changed."""
    return write_atomic(path, data, mode=PUBLIC_FILE_MODE, dir_mode=PUBLIC_DIR_MODE, skip_unchanged=True)


def publish_version(staging: Path, target: Path) -> None:
    """Rename a version assembled in a private ``mkdtemp`` folder into place, readable by every user."""
    chmod_tree(staging)
    make_dirs(target.parent, mode=PUBLIC_DIR_MODE)
    os.replace(staging, target)  # the version appears complete or not at all


def repair_modes(repo: Path, names: Iterable[str]) -> None:
    """Repositories written before the modes were set have 0600 files and 0700 version folders: reused versions
    are made readable too, or a non-root server still fails on them."""
    for name in names:
        chmod_tree(repo / name)


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import openvino
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
    }


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


def fingerprint(desc: ModelDescriptor, weights_sha256: str, arch_params: dict | None = None) -> str:
    """``arch_params``: the ones the network was built with when the weights need others than the descriptor's
    (``WeightsInfo.effective_arch_params``: a .tflite AnimeGANv2 is tf_legacy-upsampled); None: the descriptor's."""
    ident = {
        "arch": desc.network.arch,
        "arch_params": dict(desc.network.params if arch_params is None else arch_params),
        "window": desc.window,
        "output_resize": desc.network.output_resize,
        "value_range": list(desc.network.value_range),
        "weights_sha256": weights_sha256,
        "opset": OPSET,
        "export_revision": EXPORT_REVISION,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def step_source(step: str) -> bytes:
    return resources.files("stylize.server.triton_models").joinpath(step, "model.py").read_bytes()


def build_model(
    desc: ModelDescriptor, settings: BuildSettings, *, log: Callable[[str], None] = lambda s: None
) -> ModelResult:
    from .export import export_onnx
    from .weights.loaders import load_weights

    repo = settings.repository
    net, info = load_weights(desc, settings.weights.get(desc.id), weights_dir=settings.weights_dir)
    status = "untrained" if info.kind == "untrained" else "real"
    fp = fingerprint(desc, weights_identity(info), info.effective_arch_params(desc))
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
            checks = served_checks(desc, staging / ONNX_FILE, {}, settings, log=log)  # before it can be served
            manifest = {
                "model": desc.net_model,
                "id": desc.id,
                "version": version,
                "fingerprint": fp,
                "weights": {"status": status, "sha256": weights_identity(info), **info.to_dict()},
                "arch": desc.network.arch,
                "arch_params": info.effective_arch_params(desc),
                "window": desc.window,
                "opset": report.opset,
                "parity_max_abs": report.parity_max_abs,
                "parity_input": report.parity_input,
                "export_seconds": round(report.seconds, 2),
                "git_commit": git_commit(),
                "tools": tool_versions(),
                "weights_license": info.license
                or ("" if status == "untrained" else "unknown: a file given with --weights"),
                "arch_license": desc.network.license,
                **({"served_checks": checks} if checks else {}),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            publish_version(staging, net_dir / str(version))
            parity_err = report.parity_max_abs
            written += [f"{desc.net_model}/{version}/{ONNX_FILE}", f"{desc.net_model}/{version}/{MANIFEST}"]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        versions[version] = manifest

    # The labels describe the network that runs: the newest version (the step asks for model_version -1), which is
    # not this build's when a plain build matches version 1 while a --weights build made version 2.
    served = max(versions)
    served_status = versions[served].get("weights", {}).get("status", status)
    served_license = versions[served].get("weights_license") or desc.weights.license
    if served != version:
        log(f"{desc.net_model}: version {served} is newer and is the one served ({served_status} weights)")
    if reused or served != version:  # the version that runs, checked in this build's runtime and precision
        checks = served_checks(desc, net_dir / str(served) / ONNX_FILE, versions[served], settings, log=log)
        if checks != versions[served].get("served_checks", {}):
            versions[served] = {**versions[served], "served_checks": checks}
            if write_public(
                net_dir / str(served) / MANIFEST,
                (json.dumps(versions[served], indent=2, sort_keys=True) + "\n").encode(),
            ):
                written.append(f"{desc.net_model}/{served}/{MANIFEST}")
    label = {"weights_status": served_status, "weights_license": served_license}
    files: dict[str, bytes] = {
        f"{desc.net_model}/config.pbtxt": pbtxt.net_config(desc, **label, threads=settings.threads, **settings.serving),
        f"{desc.id}/config.pbtxt": pbtxt.ensemble_config(
            desc,
            **label,
            net_model=desc.trt_model if settings.gpu else None,
            runtime=settings.cpu_runtime,
            weights_versions={v: m.get("weights", {}).get("status", "unknown") for v, m in versions.items()},
        ),
    }
    make_dirs(repo / desc.id / "1", mode=PUBLIC_DIR_MODE)  # ensembles need an (empty) version folder
    if not desc.window:
        limits = Limits(
            max_pixels=settings.max_pixels, max_bytes=settings.max_bytes, max_output_pixels=settings.max_output_pixels
        )
        files[f"{desc.image_model}/config.pbtxt"] = pbtxt.image_config(
            desc,
            **label,
            net_model=desc.trt_model if settings.gpu else None,
            limits=limits,
            tile_size=settings.tile_size,
            tile_overlap=settings.tile_overlap,
            threads=settings.threads,
            net_runtime=None if settings.gpu else settings.cpu_runtime,
            precision=settings.precision,
        )
        files[f"{desc.image_model}/1/model.py"] = step_source("image")
        files[f"{desc.cached_model}/config.pbtxt"] = pbtxt.cached_config(
            desc, **label, name=desc.cached_model, image_model=desc.image_model
        )
        make_dirs(repo / desc.cached_model / "1", mode=PUBLIC_DIR_MODE)
        # the ensemble's first step, shared by every image ensemble (refuses request parameters: see pbtxt)
        files[f"{REQUEST_CHECK_MODEL}/config.pbtxt"] = pbtxt.request_check_config()
        files[f"{REQUEST_CHECK_MODEL}/1/model.py"] = step_source("request_check")
        written += _remove_legacy_steps(repo, desc)
    for rel, data in files.items():
        if write_public(repo / rel, data.encode() if isinstance(data, str) else data):
            written.append(rel)
    repair_modes(repo, desc.triton_models)
    from .precision import check_key

    return ModelResult(
        desc.id,
        version,
        status,
        reused,
        parity_err,
        written,
        served_version=served,
        served_weights=served_status,
        served_check=versions[served].get("served_checks", {}).get(check_key(settings.cpu_runtime, settings.precision)),
    )


def served_checks(
    desc: ModelDescriptor,
    onnx_file: Path,
    manifest: dict,
    settings: BuildSettings,
    *,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, dict]:
    """The manifest's ``served_checks`` with this build's runtime and precision checked (precision.check_precision,
    raises PrecisionError: the model is refused). A check made before with the same runtime version is kept, so
    a rebuild of an unchanged repository checks nothing. ONNX Runtime fp32 is the reference itself: no check."""
    from .precision import check_key, check_precision

    checks = dict(manifest.get("served_checks", {}))
    if settings.cpu_runtime == "onnxruntime":
        return checks
    key = check_key(settings.cpu_runtime, settings.precision)
    import openvino

    if checks.get(key, {}).get("runtime_version") == openvino.__version__:
        return checks
    report = check_precision(
        desc, onnx_file, runtime=settings.cpu_runtime, precision=settings.precision, threads=settings.threads
    )
    log(
        f"{desc.net_model}: {key} {report.psnr_db:.1f} dB from ONNX Runtime fp32 on real photos (worst of "
        f"{len(report.per_photo_db)}; tolerance {report.tolerance_db} dB)"
    )
    checks[key] = report.to_dict()
    return checks


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
    make_dirs(repo, mode=PUBLIC_DIR_MODE)
    with open(repo / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RepositoryBusy(f"another build is writing {repo}") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_repository(
    descs: Iterable[ModelDescriptor], settings: BuildSettings, *, log: Callable[[str], None] = lambda s: None
) -> list[ModelResult]:
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


__all__ = [
    "BuildSettings",
    "ModelResult",
    "build_repository",
    "build_model",
    "existing_versions",
    "fingerprint",
    "EXPORT_REVISION",
    "OPSET",
]
