"""The INT8 variants in the model repository: ``<id>_int8_net`` (versioned, quantized from the newest fp32 version
of ``<id>_net``), its image step ``<id>_int8_image`` and the client-facing ensemble ``<id>_int8``.

Same rules as the fp32 writer (stylize_build.repository): versioned and idempotent (a version whose fingerprint --
the fp32 source's fingerprint + the quantization settings + the ONNX Runtime version -- matches is reused), every file
written atomically, a version directory appears complete or not at all, one build at a time (the repository lock).
The manifest records the quality measured on held-out real photos next to what was quantized.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from stylize.descriptors import ModelDescriptor

from . import pbtxt
from .quantize import QuantizeError, QuantizeSettings, measure_quality, quantize_network, recipe, settings_fingerprint
from .repository import (
    MANIFEST, ONNX_FILE, BuildSettings, _atomic_write, _git_commit, _step_source, _tool_versions, existing_versions,
    repository_lock,
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


def _files_for(desc: ModelDescriptor, settings: BuildSettings, status: str) -> dict[str, bytes | str]:
    """config.pbtxt of the INT8 network, its image step (same step code, routed to the INT8 network) and ensemble."""
    from stylize.server.steps.imaging import Limits

    files: dict[str, bytes | str] = {
        f"{desc.int8_model}/config.pbtxt": pbtxt.net_config(
            desc, weights_status=status, threads=settings.threads, model_name=desc.int8_model),
        f"{desc.int8_ensemble}/config.pbtxt": pbtxt.ensemble_config(
            desc, weights_status=status, net_model=desc.int8_model, name=desc.int8_ensemble),
    }
    if not desc.window:
        limits = Limits(max_pixels=settings.max_pixels, max_bytes=settings.max_bytes,
                        max_output_pixels=settings.max_output_pixels)
        files[f"{desc.int8_image_model}/config.pbtxt"] = pbtxt.image_config(
            desc, weights_status=status, net_model=desc.int8_model, name=desc.int8_image_model, limits=limits,
            tile_size=settings.tile_size, tile_overlap=settings.tile_overlap, threads=settings.threads)
        files[f"{desc.int8_image_model}/1/model.py"] = _step_source("image")
    return files


def build_int8(desc: ModelDescriptor, settings: BuildSettings, quant: QuantizeSettings | None = None, *,
               log: Callable[[str], None] = lambda s: None) -> Int8Result:
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
            log(f"{desc.int8_model}: fidelity {q.fidelity_psnr_db} dB vs fp32"
                + (f", PSNR loss {q.loss_db} dB vs ground truth" if q.loss_db is not None else "")
                + (f" ({q.note})" if q.note else ""))
            manifest = {
                "model": desc.int8_model, "id": desc.id, "version": version, "fingerprint": fp,
                "precision": "int8 (ONNX Runtime static quantization, QDQ, per-channel weights)",
                "source": {"model": desc.net_model, "version": src_version,
                           "fingerprint": src_manifest["fingerprint"]},
                "weights": src_manifest.get("weights", {}),
                "quantization": quant.identity(), "report": report.to_dict(), "quality": quality,
                "git_commit": _git_commit(), "tools": _tool_versions(),
                "weights_license": desc.weights.license, "arch_license": desc.arch_license,
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            int8_dir.mkdir(parents=True, exist_ok=True)
            os.replace(staging, int8_dir / str(version))
            written += [f"{desc.int8_model}/{version}/{ONNX_FILE}", f"{desc.int8_model}/{version}/{MANIFEST}"]
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    (repo / desc.int8_ensemble / "1").mkdir(parents=True, exist_ok=True)  # ensembles need a version folder
    for rel, data in _files_for(desc, settings, status).items():
        if _atomic_write(repo / rel, data.encode() if isinstance(data, str) else data):
            written.append(rel)
    return Int8Result(desc.id, version, src_version, status, reused, quality, written)


def build_int8_repository(descs: Iterable[ModelDescriptor], settings: BuildSettings,
                          quant: QuantizeSettings | None = None, *,
                          log: Callable[[str], None] = lambda s: None) -> list[Int8Result]:
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
