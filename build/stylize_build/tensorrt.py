"""TensorRT FP16 plans for GPU serving (`stylize build --trt`).

Built from the same ONNX graphs the CPU repository serves (uint8 in/out, arithmetic in the graph), with optimization
profiles derived from the descriptors, a persistent timing cache, and a parity check against ONNX Runtime on the GPU.
Models are written as ``<id>_trt`` (``platform: "tensorrt_plan"``, ``KIND_GPU``), versioned like the ONNX models
(plan version N is built from ONNX version N).

This machine has no GPU: ``require_tensorrt()`` refuses with a clear message before anything is written, and the GPU
tests are skipped with that reason. Nothing in this module has been run on a GPU by this project yet.
"""

from __future__ import annotations

import ctypes
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from stylize.descriptors import ModelDescriptor

from . import pbtxt
from .repository import MANIFEST, ONNX_FILE, BuildSettings, _atomic_write, existing_versions

PLAN_FILE = "model.plan"
FP16_PARITY_ATOL = 3  # uint8 levels: FP16 math against the fp32 ONNX Runtime output
WORKSPACE_BYTES = 4 << 30
MAX_SIDE = 1024  # largest input side in the optimization profile (bigger inputs are tiled by the pre/post steps)
OPT_SIDE = 256


class GPUUnavailable(RuntimeError):
    """No NVIDIA GPU with a working CUDA driver, or no TensorRT Python package."""


def _cuda_device_count() -> int:
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        return count.value if lib.cuDeviceGetCount(ctypes.byref(count)) == 0 else 0
    return 0


def require_tensorrt():
    """Return the tensorrt module, or raise GPUUnavailable saying exactly what is missing."""
    if _cuda_device_count() == 0:
        raise GPUUnavailable(
            "no NVIDIA GPU found (libcuda could not be loaded or reports no device). TensorRT plans are built on the "
            "GPU that will serve them: run `stylize build --trt` inside nvcr.io/nvidia/tritonserver:24.10-py3 on a "
            "GPU node. Nothing was written.")
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError:
        raise GPUUnavailable("the TensorRT Python package is not installed (pip install tensorrt-cu12==10.5.0, the "
                             "version of the 24.10 container). Nothing was written.") from None
    return trt


@dataclass(frozen=True)
class Profile:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profile_for(desc: ModelDescriptor) -> Profile:
    """Min/opt/max input shapes from the descriptor (batch, [window,] height, width, channels)."""
    lo = max(desc.min_size, desc.size_multiple)
    window = (desc.window,) if desc.window else ()
    # the heaviest networks get a smaller maximum so the engine's activation memory stays bounded
    heavy = desc.arch in ("RRDBNet", "BasicVSR")
    hi = 512 if heavy else MAX_SIDE
    opt = min(OPT_SIDE, hi)
    return Profile(
        min=(1, *window, lo, lo, 3),
        opt=(max(1, desc.max_batch_size // 2), *window, opt, opt, 3),
        max=(desc.max_batch_size, *window, hi, hi, 3),
    )


def trt_config(desc: ModelDescriptor, *, weights_status: str) -> str:
    return (
        f'name: "{desc.trt_model}"\n'
        'platform: "tensorrt_plan"\n'
        f"max_batch_size: {desc.max_batch_size}\n"
        + pbtxt._tensors("input", [desc.net_input])
        + pbtxt._tensors("output", [desc.net_output])
        + "instance_group [ { count: 1 kind: KIND_GPU } ]\n"
        "dynamic_batching { max_queue_delay_microseconds: 1000 }\n"
        f"version_policy: {{ latest: {{ num_versions: {pbtxt.NUM_VERSIONS} }} }}\n"
        + pbtxt._parameters(pbtxt.describe(desc, weights_status) | {"precision": "fp16"})
    )


def build_engine(trt, desc: ModelDescriptor, onnx_path: Path, timing_cache: Path) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{desc.id}: TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    prof = builder.create_optimization_profile()
    p = profile_for(desc)
    prof.set_shape(desc.net_input.name, p.min, p.opt, p.max)
    config.add_optimization_profile(prof)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{desc.id}: TensorRT engine build failed (see the TensorRT log above)")
    _atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def parity_vs_ort(trt, desc: ModelDescriptor, plan: bytes, onnx_path: Path) -> int:
    """Max abs uint8 difference between the engine and ONNX Runtime (CUDA provider if present) on a real photo."""
    import onnxruntime as ort
    import torch  # the GPU build environment has a CUDA torch; used only for device buffers

    from .export import sample_input

    x = sample_input(desc)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    ref = ort.InferenceSession(str(onnx_path), providers=providers).run(None, {desc.net_input.name: x})[0]
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    ctx.set_input_shape(desc.net_input.name, x.shape)
    inp = torch.from_numpy(x).cuda()
    out = torch.empty(tuple(ctx.get_tensor_shape(desc.net_output.name)), dtype=torch.uint8, device="cuda")
    ctx.set_tensor_address(desc.net_input.name, inp.data_ptr())
    ctx.set_tensor_address(desc.net_output.name, out.data_ptr())
    stream = torch.cuda.Stream()
    if not ctx.execute_async_v3(stream.cuda_stream):
        raise RuntimeError(f"{desc.id}: TensorRT execution failed")
    stream.synchronize()
    return int(np.abs(out.cpu().numpy().astype(np.int16) - ref.astype(np.int16)).max())


def build_plans(descs: Iterable[ModelDescriptor], settings: BuildSettings, *,
                log: Callable[[str], None] = lambda s: None) -> list[tuple[str, int]]:
    """Build ``<id>_trt/<N>/model.plan`` for the newest ONNX version N of each descriptor (idempotent)."""
    trt = require_tensorrt()
    repo = settings.repository
    cache = repo.parent / ".cache" / "tensorrt" / "timing.cache"
    cache.parent.mkdir(parents=True, exist_ok=True)
    built = []
    for desc in descs:
        versions = existing_versions(repo / desc.net_model)
        if not versions:
            raise RuntimeError(f"{desc.id}: build the ONNX model first")
        n = max(versions)
        manifest = versions[n]
        target = repo / desc.trt_model / str(n)
        if (target / PLAN_FILE).is_file():
            log(f"{desc.trt_model}: version {n} is up to date")
            built.append((desc.trt_model, n))
            continue
        log(f"{desc.trt_model}: building FP16 engine for version {n}")
        onnx_path = repo / desc.net_model / str(n) / ONNX_FILE
        plan = build_engine(trt, desc, onnx_path, cache)
        err = parity_vs_ort(trt, desc, plan, onnx_path)
        if err > FP16_PARITY_ATOL:
            raise RuntimeError(f"{desc.trt_model}: TensorRT differs from ONNX Runtime by {err} levels "
                               f"(tolerance {FP16_PARITY_ATOL}); nothing written")
        staging = Path(tempfile.mkdtemp(dir=repo, prefix=f".{desc.trt_model}."))
        (staging / PLAN_FILE).write_bytes(plan)
        trt_manifest = manifest | {"model": desc.trt_model, "precision": "fp16", "trt_parity_max_abs": err,
                                   "tensorrt": trt.__version__, "profile": profile_for(desc).__dict__}
        (staging / MANIFEST).write_text(json.dumps(trt_manifest, indent=2, sort_keys=True, default=list) + "\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        status = manifest.get("weights", {}).get("status", "untrained")
        _atomic_write(repo / desc.trt_model / "config.pbtxt", trt_config(desc, weights_status=status).encode())
        built.append((desc.trt_model, n))
    return built
