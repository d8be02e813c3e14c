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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from stylize.contract.descriptors import ModelDescriptor

from . import pbtxt
from .repository import (
    MANIFEST,
    ONNX_FILE,
    BuildSettings,
    existing_versions,
    publish_version,
    repair_modes,
    write_public,
)

FP16_PARITY_ATOL = 3  # uint8 levels: FP16 math against the fp32 ONNX Runtime output
WORKSPACE_BYTES = 4 << 30
OPT_SIDE = 256  # opt side of untiled networks (tiled ones: their tile)
# The TensorRT of nvcr.io/nvidia/tritonserver:24.10-py3, the serving container: a plan runs only on the TensorRT
# version (and GPU architecture) that built it, so the build environment must match it (k8s/image/Dockerfile's
# plan-builder stage installs exactly this wheel)
SERVING_TENSORRT = "10.5.0"


class GPUUnavailable(RuntimeError):
    """No NVIDIA GPU with a working CUDA driver, or no TensorRT Python package."""


def _libcuda():
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _cuda_device_count() -> int:
    lib = _libcuda()
    if lib is None or lib.cuInit(0) != 0:
        return 0
    count = ctypes.c_int(0)
    return count.value if lib.cuDeviceGetCount(ctypes.byref(count)) == 0 else 0


@dataclass(frozen=True)
class GpuTarget:
    """What a plan is bound to: the TensorRT version that built it and the GPU architecture it was built on."""

    tensorrt: str
    compute_capability: tuple[int, int]
    name: str = ""

    @property
    def cc(self) -> str:  # Triton's cc_model_filenames key
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    @property
    def plan_file(self) -> str:
        major, minor = self.compute_capability
        return f"model.trt{self.tensorrt}.sm{major}{minor}.plan"

    @property
    def timing_cache_file(self) -> str:
        major, minor = self.compute_capability
        return f"timing.trt{self.tensorrt}.sm{major}{minor}.cache"


def current_target(trt, device: int = 0) -> GpuTarget:
    """The TensorRT version and the compute capability (and name) of GPU ``device``, read from the CUDA driver."""
    lib = _libcuda()
    if lib is None or lib.cuInit(0) != 0:
        raise GPUUnavailable("the CUDA driver is not available")
    dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    ok = (
        lib.cuDeviceGet(ctypes.byref(dev), device) == 0
        and lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev) == 0  # COMPUTE_CAPABILITY_MAJOR
        and lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev) == 0  # COMPUTE_CAPABILITY_MINOR
        and lib.cuDeviceGetName(name, 256, dev) == 0
    )
    if not ok:
        raise GPUUnavailable(f"could not read GPU {device}'s compute capability from the CUDA driver")
    return GpuTarget(str(trt.__version__), (major.value, minor.value), name.value.decode(errors="replace"))


def require_tensorrt():
    """Return the tensorrt module, or raise GPUUnavailable saying exactly what is missing."""
    if _cuda_device_count() == 0:
        raise GPUUnavailable(
            "no NVIDIA GPU found (libcuda could not be loaded or reports no device). TensorRT plans are built on the "
            "GPU that will serve them, with the serving container's TensorRT: run k8s/image/Dockerfile's "
            "plan-builder stage on a GPU node (see its header). Nothing was written."
        )
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError:
        raise GPUUnavailable(
            f"the TensorRT Python package is not installed (pip install "
            f"tensorrt-cu12=={SERVING_TENSORRT}, the version of the 24.10 container; or build in "
            "k8s/image/Dockerfile's plan-builder stage). Nothing was written."
        ) from None
    if not str(trt.__version__).startswith(SERVING_TENSORRT.rsplit(".", 1)[0] + "."):
        raise GPUUnavailable(
            f"TensorRT {trt.__version__} is installed, but the serving container runs "
            f"{SERVING_TENSORRT}: a plan runs only on the TensorRT that built it. Nothing was written."
        )
    return trt


@dataclass(frozen=True)
class Profile:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profile_for(desc: ModelDescriptor) -> Profile:
    """Min/opt/max input shapes from the descriptor (batch, [window,] height, width, channels).

    Max: ``desc.serving.gpu_max_side`` (the image step splits any longer side, tiling.plan_tiles). Opt: what the
    step really sends most: ``tiling.batch`` tiles of ``tiling.size`` for tiled networks, a batch of 1 otherwise.
    """
    m = desc.network.size_multiple
    lo = -(-max(desc.network.min_size, m) // m) * m
    hi = desc.serving.gpu_max_side - desc.serving.gpu_max_side % m
    window = (desc.window,) if desc.window else ()
    if desc.serving.tiling:
        opt_batch, opt = desc.serving.tiling.batch, desc.serving.tiling.size
    else:
        opt_batch, opt = 1, min(desc.serving.max_side or OPT_SIDE, OPT_SIDE if desc.window else hi)
    opt = max(lo, min(hi, opt - opt % m))
    return Profile(
        min=(1, *window, lo, lo, 3),
        opt=(opt_batch, *window, opt, opt, 3),
        max=(desc.serving.max_batch_size, *window, hi, hi, 3),
    )


def trt_config(
    desc: ModelDescriptor, *, weights_status: str, weights_license: str | None = None, targets: Iterable[GpuTarget] = ()
) -> str:
    """``cc_model_filenames`` maps each GPU architecture a plan was built for to its file; there is no default
    file, so a GPU of another architecture fails to load the model, with Triton saying so, instead of running a
    plan built for another GPU."""
    plans = "".join(
        f'cc_model_filenames {{ key: "{t.cc}" value: "{t.plan_file}" }}\n'
        for t in sorted(set(targets), key=lambda t: t.compute_capability)
    )
    return (
        f'name: "{desc.trt_model}"\n'
        'platform: "tensorrt_plan"\n'
        f"max_batch_size: {desc.serving.max_batch_size}\n"
        + plans
        + pbtxt._tensors("input", [desc.net_input])
        + pbtxt._tensors("output", [desc.net_output])
        + "instance_group [ { count: 1 kind: KIND_GPU } ]\n"
        "dynamic_batching { max_queue_delay_microseconds: 1000 }\n"
        f"version_policy: {{ latest: {{ num_versions: {pbtxt.NUM_VERSIONS} }} }}\n"
        + pbtxt._parameters(pbtxt.describe(desc, weights_status, weights_license) | {"precision": "fp16"})
    )


def build_engine(trt, desc: ModelDescriptor, onnx_path: Path, timing_cache: Path) -> bytes:
    import onnx

    from .trt_rules import require_trt_compatible

    require_trt_compatible(onnx.load(str(onnx_path)), str(onnx_path))  # refuse before TensorRT's own parse
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
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise RuntimeError(
            f"{desc.id}: TensorRT refused the timing cache {timing_cache} (another TensorRT or GPU "
            "made it?): delete it to start a new one"
        )
    prof = builder.create_optimization_profile()
    p = profile_for(desc)
    prof.set_shape(desc.net_input.name, p.min, p.opt, p.max)
    config.add_optimization_profile(prof)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{desc.id}: TensorRT engine build failed (see the TensorRT log above)")
    write_public(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def parity_vs_ort(trt, desc: ModelDescriptor, plan: bytes, onnx_path: Path) -> int:
    """Max abs uint8 difference between the engine and ONNX Runtime (CUDA provider if present) on a real photo, at
    batch 2 where the model batches (the photo and its mirror image: batching must not mix items)."""
    import onnxruntime as ort
    import torch  # the GPU build environment has a CUDA torch; used only for device buffers
    from stylize.engine.ort_runner import ort_session

    from .export import sample_input

    x = sample_input(desc)
    if desc.serving.max_batch_size >= 2:
        x = np.ascontiguousarray(np.concatenate([x, x[..., ::-1, :]]))
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    ref = ort_session(onnx_path, providers=providers).run(None, {desc.net_input.name: x})[0]
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


@dataclass
class PlanResults:
    built: list[tuple[str, int]]  # (model, version) with a plan for this GPU, new or up to date
    failed: dict[str, str]  # model id -> why its plan could not be built


def _targets(manifest: dict) -> list[GpuTarget]:
    return [
        GpuTarget(p["tensorrt"], tuple(p["compute_capability"]), p.get("gpu", ""))
        for p in manifest.get("plans", {}).values()
    ]


def build_plans(
    descs: Iterable[ModelDescriptor], settings: BuildSettings, *, log: Callable[[str], None] = lambda s: None
) -> PlanResults:
    """Build ``<id>_trt/<N>/model.trt<version>.sm<cc>.plan`` for the newest ONNX version N of each descriptor, for
    this machine's TensorRT and GPU (idempotent: a plan for another TensorRT or GPU is never reused, it sits beside).

    A model whose plan fails is reported in ``failed`` and left as it was; the others are built.
    """
    trt = require_tensorrt()
    gpu = current_target(trt)
    repo = settings.repository
    cache = repo.parent / ".cache" / "tensorrt" / gpu.timing_cache_file
    cache.parent.mkdir(parents=True, exist_ok=True)
    results = PlanResults([], {})
    for desc in descs:
        try:
            n = _build_plan(trt, gpu, desc, repo, cache, log)
        except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others still build
            results.failed[desc.id] = f"{type(e).__name__}: {e}"
            log(f"{desc.trt_model}: FAILED: {e}")
            continue
        results.built.append((desc.trt_model, n))
    return results


def _build_plan(trt, gpu: GpuTarget, desc: ModelDescriptor, repo: Path, cache: Path, log: Callable[[str], None]) -> int:
    versions = existing_versions(repo / desc.net_model)
    if not versions:
        raise RuntimeError(f"{desc.id}: build the ONNX model first")
    n = max(versions)
    manifest = versions[n]
    target = repo / desc.trt_model / str(n)
    trt_manifest_path = target / MANIFEST
    trt_manifest = json.loads(trt_manifest_path.read_text()) if trt_manifest_path.is_file() else {}
    if (target / gpu.plan_file).is_file() and gpu.plan_file in trt_manifest.get("plans", {}):
        log(f"{desc.trt_model}: version {n} has a plan for TensorRT {gpu.tensorrt} on sm{gpu.cc}")
    else:
        log(
            f"{desc.trt_model}: building an FP16 engine of version {n} for TensorRT {gpu.tensorrt} on {gpu.name} "
            f"(sm{gpu.cc})"
        )
        onnx_path = repo / desc.net_model / str(n) / ONNX_FILE
        plan = build_engine(trt, desc, onnx_path, cache)
        err = parity_vs_ort(trt, desc, plan, onnx_path)
        if err > FP16_PARITY_ATOL:
            raise RuntimeError(
                f"{desc.trt_model}: TensorRT differs from ONNX Runtime by {err} levels "
                f"(tolerance {FP16_PARITY_ATOL}); nothing written"
            )
        plans = dict(trt_manifest.get("plans", {}))
        plans[gpu.plan_file] = {
            "tensorrt": gpu.tensorrt,
            "compute_capability": list(gpu.compute_capability),
            "gpu": gpu.name,
            "trt_parity_max_abs": err,
        }
        trt_manifest = manifest | {
            "model": desc.trt_model,
            "precision": "fp16",
            "plans": plans,
            "profile": profile_for(desc).__dict__,
        }
        manifest_bytes = (json.dumps(trt_manifest, indent=2, sort_keys=True, default=list) + "\n").encode()
        if target.is_dir():  # a plan for another GPU is there already: add this one beside it
            write_public(target / gpu.plan_file, plan)
            write_public(trt_manifest_path, manifest_bytes)
        else:
            staging = Path(tempfile.mkdtemp(dir=repo, prefix=f".{desc.trt_model}."))
            (staging / gpu.plan_file).write_bytes(plan)
            (staging / MANIFEST).write_bytes(manifest_bytes)
            publish_version(staging, target)
    status = manifest.get("weights", {}).get("status", "untrained")
    write_public(
        repo / desc.trt_model / "config.pbtxt",
        trt_config(
            desc, weights_status=status, weights_license=manifest.get("weights_license"), targets=_targets(trt_manifest)
        ).encode(),
    )
    repair_modes(repo, (desc.trt_model,))
    return n
