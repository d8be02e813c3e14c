"""The INT8 variants in the model repository: ``<id>_int8_net`` (versioned, quantized from the newest fp32 version
of ``<id>_net``), its image step ``<id>_int8_image`` and the client-facing ensemble ``<id>_int8``.

Same rules as the fp32 writer (stylize_build.repository): versioned and idempotent (a version whose fingerprint --
the fp32 source's fingerprint + the quantization settings + the ONNX Runtime version -- matches is reused), every file
written atomically, a version directory appears complete or not at all, one build at a time (the repository lock).
The manifest records the quality measured on held-out real photos next to what was quantized.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from stylize.contract.descriptors import ModelDescriptor
from stylize.contract.fileio import PUBLIC_DIR_MODE, make_dirs
from stylize.contract.provenance import git_commit

from . import pbtxt
from .quantize import (
    MAX_LOSS_DB,
    QuantizeError,
    QuantizeSettings,
    measure_quality,
    quantize_network,
    recipe,
    settings_fingerprint,
)
from .repository import (
    MANIFEST,
    ONNX_FILE,
    BuildSettings,
    existing_versions,
    publish_version,
    repair_modes,
    repository_lock,
    step_source,
    tool_versions,
    write_public,
)


@dataclass
class Int8Result:
    id: str
    version: int
    source_version: int
    weights: str
    reused: bool
    quality: dict | None  # QualityReport as a dict (from the manifest when reused)
    written: list[str] = field(default_factory=list)


def _files_for(
    desc: ModelDescriptor, settings: BuildSettings, status: str, license: str | None = None
) -> dict[str, bytes | str]:
    """config.pbtxt of the INT8 network, its image step (same step code, routed to the INT8 network) and ensemble;
    ``status`` / ``license``: those of the INT8 version served (the newest)."""
    from stylize.contract.step import Limits

    label = {"weights_status": status, "weights_license": license}
    files: dict[str, bytes | str] = {
        f"{desc.int8_model}/config.pbtxt": pbtxt.net_config(
            desc, **label, threads=settings.threads, model_name=desc.int8_model, **settings.serving
        ),
        f"{desc.int8_ensemble}/config.pbtxt": pbtxt.ensemble_config(
            desc, **label, net_model=desc.int8_model, name=desc.int8_ensemble, runtime=settings.cpu_runtime
        ),
    }
    if not desc.window:
        limits = Limits(
            max_pixels=settings.max_pixels, max_bytes=settings.max_bytes, max_output_pixels=settings.max_output_pixels
        )
        files[f"{desc.int8_image_model}/config.pbtxt"] = pbtxt.image_config(
            desc,
            **label,
            net_model=desc.int8_model,
            name=desc.int8_image_model,
            limits=limits,
            tile_size=settings.tile_size,
            tile_overlap=settings.tile_overlap,
            threads=settings.threads,
            net_runtime=settings.cpu_runtime,
            precision=settings.precision,
        )
        files[f"{desc.int8_image_model}/1/model.py"] = step_source("image")
        files[f"{desc.int8_cached_model}/config.pbtxt"] = pbtxt.cached_config(
            desc, **label, name=desc.int8_cached_model, image_model=desc.int8_image_model
        )
    return files


def served_quality(
    desc: ModelDescriptor,
    fp32: Path,
    int8: Path,
    manifest: dict,
    settings: BuildSettings,
    *,
    status: str,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[dict, dict]:
    """(quality served, the manifest's ``served_quality``): the INT8 graph measured in this build's runtime and
    precision (ONNX Runtime's is the manifest's ``quality``). Refuses (QuantizeError) a real-weights variant that
    loses more than MAX_LOSS_DB, or a precision this CPU would not run. A measurement with the same runtime version
    is kept."""
    from .precision import check_key

    checks = dict(manifest.get("served_quality", {}))
    if settings.cpu_runtime == "onnxruntime" and manifest.get("quality"):
        quality = manifest["quality"]
    else:
        import openvino

        key = check_key(settings.cpu_runtime, settings.precision)
        quality = checks.get(key)
        if not quality or quality.get("runtime_version") != openvino.__version__:
            q = measure_quality(
                desc,
                fp32,
                int8,
                weights=status,
                threads=settings.threads,
                runtime=settings.cpu_runtime,
                precision=settings.precision,
            )
            if q.precision != settings.precision:
                raise QuantizeError(
                    f"{desc.int8_model}: {settings.cpu_runtime} runs the float parts in {q.precision} "
                    f"on this CPU when asked for {settings.precision}: build with --precision "
                    f"{q.precision}"
                )
            quality = checks[key] = asdict(q) | {"runtime_version": openvino.__version__}
            log(
                f"{desc.int8_model}: served on {key}: fidelity {q.fidelity_psnr_db} dB vs fp32"
                + (f", PSNR loss {q.loss_db} dB vs ground truth" if q.loss_db is not None else "")
            )
    loss = quality.get("loss_db")
    if quality.get("meaningful") and loss is not None and loss > MAX_LOSS_DB:
        raise QuantizeError(
            f"{desc.int8_model}: served on {quality.get('runtime')} it loses {loss} dB PSNR vs "
            f"ground truth on held-out real photos (at most {MAX_LOSS_DB} dB): refused"
        )
    return quality, checks


def build_int8(
    desc: ModelDescriptor,
    settings: BuildSettings,
    quant: QuantizeSettings | None = None,
    *,
    log: Callable[[str], None] = lambda s: None,
) -> Int8Result:
    """Quantize the newest fp32 version of ``desc.net_model`` into a version of ``desc.int8_model`` (if new).
    ``quant`` defaults to the architecture's recipe (quantize.recipe)."""
    quant = quant or recipe(desc)
    repo = settings.repository
    sources = existing_versions(repo / desc.net_model)
    if not sources:
        raise QuantizeError(f"{desc.id}: no fp32 version of {desc.net_model} in {repo}: run `stylize build` first")
    src_version = max(sources)
    src_manifest = sources[src_version]
    status = src_manifest.get("weights", {}).get("status", "unknown")
    fp = settings_fingerprint(src_manifest["fingerprint"], quant)
    int8_dir = repo / desc.int8_model
    versions = existing_versions(int8_dir)
    same = [v for v, m in versions.items() if m.get("fingerprint") == fp]
    written: list[str] = []
    if same:
        version = max(same)
        quality = versions[version].get("quality")
        log(f"{desc.int8_model}: version {version} is up to date")
        reused = True
    else:
        version, reused = max(versions, default=0) + 1, False
        log(f"{desc.int8_model}: quantizing {desc.net_model} version {src_version} -> version {version}")
        src = repo / desc.net_model / str(src_version) / ONNX_FILE
        staging = Path(tempfile.mkdtemp(dir=repo, prefix=f".{desc.int8_model}.{version}."))
        try:
            report = quantize_network(desc, src, staging / ONNX_FILE, quant, log=log)
            q = measure_quality(desc, src, staging / ONNX_FILE, weights=status, threads=settings.threads)
            quality = asdict(q)
            log(
                f"{desc.int8_model}: fidelity {q.fidelity_psnr_db} dB vs fp32"
                + (f", PSNR loss {q.loss_db} dB vs ground truth" if q.loss_db is not None else "")
                + (f" ({q.note})" if q.note else "")
            )
            quality, checks = served_quality(
                desc, src, staging / ONNX_FILE, {"quality": quality}, settings, status=status, log=log
            )  # before it can be served
            manifest = {
                "model": desc.int8_model,
                "id": desc.id,
                "version": version,
                "fingerprint": fp,
                "precision": "int8 (ONNX Runtime static quantization, QDQ, per-channel weights)",
                "source": {"model": desc.net_model, "version": src_version, "fingerprint": src_manifest["fingerprint"]},
                "weights": src_manifest.get("weights", {}),
                "quantization": quant.identity(),
                "report": report.to_dict(),
                "quality": asdict(q),
                **({"served_quality": checks} if checks else {}),
                "git_commit": git_commit(),
                "tools": tool_versions(),
                "weights_license": desc.weights.license,
                "arch_license": desc.network.license,
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            publish_version(staging, int8_dir / str(version))
            written += [f"{desc.int8_model}/{version}/{ONNX_FILE}", f"{desc.int8_model}/{version}/{MANIFEST}"]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        versions[version] = manifest

    served_version = max(versions)
    served = versions[served_version]  # the labels describe the INT8 version that runs (model_version -1)
    if reused or served_version != version:  # the version that runs, measured in this build's runtime/precision
        src_of = served.get("source", {}).get("version", src_version)
        quality, checks = served_quality(
            desc,
            repo / desc.net_model / str(src_of) / ONNX_FILE,
            int8_dir / str(served_version) / ONNX_FILE,
            served,
            settings,
            status=served.get("weights", {}).get("status", status),
            log=log,
        )
        if checks != served.get("served_quality", {}):
            served = versions[served_version] = {**served, "served_quality": checks}
            if write_public(
                int8_dir / str(served_version) / MANIFEST,
                (json.dumps(served, indent=2, sort_keys=True) + "\n").encode(),
            ):
                written.append(f"{desc.int8_model}/{served_version}/{MANIFEST}")
    for ensemble in (desc.int8_ensemble, *(() if desc.window else (desc.int8_cached_model,))):
        make_dirs(repo / ensemble / "1", mode=PUBLIC_DIR_MODE)  # ensembles need a version folder
    for rel, data in _files_for(
        desc, settings, served.get("weights", {}).get("status", status), served.get("weights_license")
    ).items():
        if write_public(repo / rel, data.encode() if isinstance(data, str) else data):
            written.append(rel)
    repair_modes(repo, (desc.int8_model, desc.int8_image_model, desc.int8_cached_model, desc.int8_ensemble))
    return Int8Result(desc.id, version, src_version, status, reused, quality, written)


def build_int8_repository(
    descs: Iterable[ModelDescriptor],
    settings: BuildSettings,
    quant: QuantizeSettings | None = None,
    *,
    log: Callable[[str], None] = lambda s: None,
) -> list[Int8Result]:
    """INT8 variants of every non-windowed descriptor (BasicVSR is skipped: see quantize.quantize_network)."""
    with repository_lock(settings.repository):
        results = []
        for desc in descs:
            if desc.window:
                log(f"{desc.id}: no INT8 variant (windowed video model)")
                continue
            results.append(build_int8(desc, settings, quant, log=log))
        return results


def int8_manifest(repository: Path, desc: ModelDescriptor) -> dict | None:
    """Manifest of the newest INT8 version, or None when the repository has none."""
    versions = existing_versions(repository / desc.int8_model)
    return versions[max(versions)] if versions else None


__all__ = ["Int8Result", "build_int8", "build_int8_repository", "int8_manifest"]
