"""OpenVINO behind a Triton model config: the logic of the Python-based ``openvino`` backend, and the one place an
OpenVINO model is compiled (the backend, the image step's in-process network, the build's checks and the bench all
call :func:`compile_network`).

Parameters are the ones Triton's native OpenVINO backend reads (triton-inference-server/openvino_backend,
``src/openvino.cc``: ``ParseParameters``), with its semantics, so one ``config.pbtxt`` means the same thing here and in
NVIDIA's container:

* ``INFERENCE_NUM_THREADS``, ``COMPILATION_NUM_THREADS``: non-negative numbers;
* ``NUM_STREAMS``: ``AUTO``, ``NUMA`` or a number; ``PERFORMANCE_HINT``: ``LATENCY`` / ``THROUGHPUT`` /
  ``CUMULATIVE_THROUGHPUT``;
* ``HINT_BF16``: ``YES`` (the only value the native backend accepts) asks for bfloat16 inference;
* ``TARGET_DEVICE``: only ``CPU`` here. ``RESHAPE_IO_LAYERS`` is not implemented here and refused.

Two differences that follow from this backend being Python-based, both about what only this backend can do:

* Each instance of a Python-based backend is its own process with its own compiled model, where the native backend
  compiles once and gives each instance an infer request on the shared streams. Here each process takes its share:
  ``NUM_STREAMS // instances`` streams and ``INFERENCE_NUM_THREADS // instances`` threads (at least 1), so a request
  gets the same threads in both.
* CPU pinning is off (:data:`PINNING`): several processes would each pin to the same first cores, and on cores shared
  with other work a pinned thread cannot move off a busy core (docs/decisions.md#cpu-pinning).
* The native backend has no fp32 hint (HINT_BF16 takes only YES): without it OpenVINO's CPU default applies, which
  is bf16 on CPUs with AVX512_BF16/AMX. The build writes the precision it checked as the parameter ``precision``; this
  backend runs ``fp32`` strictly in f32, the native one cannot (docs/performance.md, OpenVINO).

The model cache (``STYLIZE_OV_CACHE``, see :func:`cache_dir_from_env`) is this project's: the native backend has none.

A config with ``max_batch_size > 0`` is refused: the native backend fixes the batch at ``max_batch_size``
(``ov::set_batch``) and fails, or with ``ENABLE_BATCH_PADDING`` pads, every smaller batch. The build writes the
OpenVINO networks with ``max_batch_size: 0`` and the batch as the first of the dims (pbtxt.net_config).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from stylize.contract.step import PRECISIONS
from stylize.engine.model_runner import (
    GraphTensor,
    InferenceError,
    InvalidInputError,
    ModelConfig,
    ModelConfigError,
    ModelRunner,
)

if TYPE_CHECKING:  # pragma: no cover
    import openvino

PRECISION_PARAMETER = "precision"  # the build's record of the precision it checked (config.pbtxt parameter)
OV_CACHE_ENV = "STYLIZE_OV_CACHE"  # folder of OpenVINO's model cache; "off" disables it
DEVICE = "CPU"

_PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
_OV_TO_TRITON = {
    "boolean": "BOOL",
    "u8": "UINT8",
    "u16": "UINT16",
    "u32": "UINT32",
    "u64": "UINT64",
    "i8": "INT8",
    "i16": "INT16",
    "i32": "INT32",
    "i64": "INT64",
    "f16": "FP16",
    "f32": "FP32",
    "f64": "FP64",
    "string": "STRING",
}
_OFF = ("", "0", "off", "none", "false", "no")
PINNING = False  # ENABLE_CPU_PINNING of every model compiled here (docs/decisions.md#cpu-pinning)


# ---------------------------------------------------------------------------------------------------------------
# The machine and the cache
# ---------------------------------------------------------------------------------------------------------------


def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of this CPU (``BF16`` where it has AVX512_BF16 or AMX)."""
    import openvino as ov

    return tuple(ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def cpu_supports_bf16() -> bool:
    return "BF16" in cpu_capabilities()


def default_precision() -> str:
    """bf16 where the CPU runs it natively, else fp32 (OpenVINO runs a bf16 hint as f32 on such CPUs anyway)."""
    return "bf16" if cpu_supports_bf16() else "fp32"


def cache_dir_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """``STYLIZE_OV_CACHE``; unset: ``~/.cache/stylize/openvino`` (in the k8s pod HOME is its /tmp emptyDir, which
    outlives container restarts); ``off``/``0``/empty: no cache."""
    environ = os.environ if environ is None else environ
    if OV_CACHE_ENV not in environ:
        return Path.home() / ".cache" / "stylize" / "openvino"
    raw = environ[OV_CACHE_ENV].strip()
    return None if raw.lower() in _OFF else Path(raw)


# ---------------------------------------------------------------------------------------------------------------
# Compiling
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CompileSettings:
    """How one process compiles one network. ``precision``: ``fp32`` (strict f32), ``bf16``, or None (OpenVINO's
    CPU default: what the native backend runs without HINT_BF16). ``threads``/``compile_threads``: 0 or None, all."""

    precision: str | None = None
    threads: int | None = None
    streams: int | str | None = 1  # an int, "AUTO" or "NUMA"
    hint: str | None = "LATENCY"
    compile_threads: int | None = None
    pinning: bool | None = PINNING  # None: OpenVINO's default (on)
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ModelConfigError(f"precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.hint is not None and self.hint not in _PERFORMANCE_HINTS:
            raise ModelConfigError(f"performance hint {self.hint!r}; expected one of {', '.join(_PERFORMANCE_HINTS)}")

    def properties(self) -> dict[str, Any]:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        out: dict[str, Any] = {}
        if self.precision is not None:
            out[hints.inference_precision] = ov.Type.bf16 if self.precision == "bf16" else ov.Type.f32
        if self.hint is not None:
            out[hints.performance_mode] = getattr(hints.PerformanceMode, self.hint)
        if self.streams is not None:
            out[props.streams.num] = (
                self.streams if isinstance(self.streams, int) else getattr(props.streams.Num, self.streams)
            )
        if self.threads:
            out[props.inference_num_threads] = self.threads
        if self.compile_threads:
            out[props.compilation_num_threads] = self.compile_threads
        if self.pinning is not None:
            out[hints.enable_cpu_pinning] = self.pinning
        return out


@dataclass
class Compiled:
    """A compiled network and what it actually runs with (OpenVINO may change a hint: bf16 on a CPU without it)."""

    model: "openvino.Model"
    compiled: "openvino.CompiledModel"
    precision: str  # what the compiled model reports: "fp32" or "bf16"
    streams: int
    threads: int
    seconds: float  # read + compile
    cache_dir: Path | None  # None: compiled without the cache
    cache_error: str = ""  # why the cache could not be used, if it was asked for
    from_cache: bool = False  # imported from the cache's blob (not compiled)

    def describe(self) -> str:
        cache = (
            f"{'from the ' if self.from_cache else ''}cache {self.cache_dir}"
            if self.cache_dir
            else f"no cache ({self.cache_error})"
            if self.cache_error
            else "no cache"
        )
        return (
            f"OpenVINO {self.precision}, {self.streams} stream(s) x {self.threads} thread(s), compiled in "
            f"{self.seconds:.2f} s, {cache}"
        )


def _reported_precision(compiled: "openvino.CompiledModel") -> str:
    return "bf16" if "bf16" in str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower() else "fp32"


def _cache_key(path: Path, properties: Mapping[str, Any], core: "openvino.Core") -> str:
    """What a compiled blob depends on: the network's bytes (an IR's weights too), the properties, OpenVINO's version
    and the CPU (a blob holds kernels for this CPU's instruction set)."""
    import openvino as ov

    h = hashlib.sha256()
    for part in (
        ov.get_version(),
        core.get_property(DEVICE, "FULL_DEVICE_NAME"),
        repr(sorted((str(k), str(v)) for k, v in properties.items())),
    ):
        h.update(part.encode() + b"\0")
    for f in (path, path.with_suffix(".bin")) if path.suffix == ".xml" else (path,):
        if f.is_file():
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
    return h.hexdigest()[:32]


@contextlib.contextmanager
def _locked(lock_path: Path):
    """An exclusive lock across processes (flock: released by the kernel when its holder dies, even by SIGKILL)."""
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _compile_cached(
    core: "openvino.Core", model: "openvino.Model", path: Path, properties: dict[str, Any], cache: Path
) -> tuple["openvino.CompiledModel", bool]:
    """This project's model cache, safe across processes. OpenVINO's own (``CACHE_DIR``) is not: processes that
    compile one network on a cold cache write and map the same blob at once (SIGBUS, measured:
    docs/decisions.md#openvino-cache), and a process killed while writing leaves a truncated blob. Here the
    processes that want one blob take turns (the first compiles, the others import what it wrote), a blob appears
    under its name only whole (written aside, then renamed), and a blob that does not import is compiled again and
    replaced."""
    cache.mkdir(parents=True, exist_ok=True)
    key = _cache_key(path, properties, core)
    blob = cache / f"{key}.blob"
    with _locked(cache / f"{key}.lock"):
        if blob.is_file():
            try:
                return core.import_model(blob.read_bytes(), DEVICE, properties), True
            except Exception:  # noqa: BLE001 - another OpenVINO, a damaged file: compile it again below
                blob.unlink(missing_ok=True)
        compiled = core.compile_model(model, DEVICE, properties)
        tmp = cache / f".{key}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(compiled.export_model().getvalue())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, blob)
        finally:
            tmp.unlink(missing_ok=True)
        return compiled, False


def compile_network(path: Path | str, settings: CompileSettings) -> Compiled:
    """Read an ONNX (or IR) file and compile it for the CPU, through the model cache when ``settings.cache_dir`` is
    set (:func:`_compile_cached`). A cache folder that cannot be used (not writable, full) costs a recompile, never
    the model: the file is compiled again without the cache and the reason kept."""
    import openvino as ov

    t0 = time.perf_counter()
    core = ov.Core()
    model = core.read_model(str(path))
    properties = settings.properties()
    cache, cache_error = settings.cache_dir, ""
    compiled, from_cache = None, False
    if cache is not None:
        try:
            compiled, from_cache = _compile_cached(core, model, Path(path), properties, Path(cache))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError; the folder OSError
            cache, cache_error = None, f"{type(e).__name__}: {e}".splitlines()[0][:300]
    if compiled is None:
        compiled = core.compile_model(model, DEVICE, properties)
    return Compiled(
        model=model,
        compiled=compiled,
        precision=_reported_precision(compiled),
        streams=int(compiled.get_property("NUM_STREAMS")),
        threads=int(compiled.get_property("INFERENCE_NUM_THREADS")),
        seconds=time.perf_counter() - t0,
        cache_dir=cache,
        cache_error=cache_error,
        from_cache=from_cache,
    )


class Network:
    """A compiled network as a callable on whole arrays: one infer request, inputs by name, outputs in order (the
    image step's in-process network and the bench's runner)."""

    def __init__(self, path: Path | str, settings: CompileSettings, *, output_names: Sequence[str] | None = None):
        self.built = compile_network(path, settings)
        self.request = self.built.compiled.create_infer_request()
        names = output_names or [o.get_any_name() for o in self.built.compiled.outputs]
        self.outputs = [self.built.compiled.output(n) for n in names]

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        # share_inputs: no copy of the input (the call is synchronous); outputs are copied out of the request
        result = self.request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()}, share_inputs=True)
        return [result[o] for o in self.outputs]


# ---------------------------------------------------------------------------------------------------------------
# The backend's config
# ---------------------------------------------------------------------------------------------------------------


def _native_number(params, key: str) -> int | None:
    raw = params.text(key)
    if not raw:
        return None
    if not raw.isdigit():
        raise ModelConfigError(
            f"model {params.model!r}: expected the parameter '{key}' to be a non-negative number, got {raw}"
        )
    return int(raw)


@dataclass(frozen=True)
class OvModelConfig(ModelConfig):
    """A model config with the native OpenVINO backend's parameters."""

    inference_threads: int | None = None  # INFERENCE_NUM_THREADS (all instances together, as natively)
    compilation_threads: int | None = None
    num_streams: int | str | None = None  # an int, "AUTO", "NUMA"
    performance_hint: str | None = None
    hint_bf16: bool = False
    precision: str | None = None  # the build's record (parameter "precision"): "fp32" makes this backend strict f32

    @classmethod
    def from_triton(cls, config: Mapping[str, Any] | str) -> "OvModelConfig":
        config = cls.decode(config)
        common = cls.common(config)
        params = ModelConfig(**common).params()
        name = common["name"]
        if common["max_batch_size"] > 0:
            raise ModelConfigError(
                f"model {name!r}: max_batch_size {common['max_batch_size']} with backend openvino: Triton's OpenVINO "
                "backend fixes the batch at max_batch_size and fails (or pads) smaller batches; write "
                "max_batch_size: 0 and the batch as the first of the dims"
            )
        device = params.text("TARGET_DEVICE").upper()
        if device not in ("", DEVICE):
            raise ModelConfigError(f"model {name!r}: TARGET_DEVICE {device}: only CPU is available here")
        if params.text("RESHAPE_IO_LAYERS").lower() == "yes":
            raise ModelConfigError(f"model {name!r}: RESHAPE_IO_LAYERS is not supported by this backend")
        bf16 = params.text("HINT_BF16")
        if bf16 and bf16.lower() != "yes":
            raise ModelConfigError(f"model {name!r}: expected the parameter 'HINT_BF16' to be YES, got {bf16}")
        streams_raw = params.text("NUM_STREAMS").upper()
        if streams_raw and streams_raw not in ("AUTO", "NUMA") and not streams_raw.isdigit():
            raise ModelConfigError(
                f"model {name!r}: expected the parameter 'NUM_STREAMS' to be either "
                f"AUTO/NUMA/<int_value>, got {streams_raw}"
            )
        hint = params.text("PERFORMANCE_HINT").upper() or None
        if hint is not None and hint not in _PERFORMANCE_HINTS:
            raise ModelConfigError(
                f"model {name!r}: expected the parameter 'PERFORMANCE_HINT' to be "
                f"LATENCY/THROUGHPUT/CUMULATIVE_THROUGHPUT, got {hint}"
            )
        precision = params.text(PRECISION_PARAMETER).lower() or None
        if precision not in (None, *PRECISIONS):
            raise ModelConfigError(
                f"model {name!r}: parameter {PRECISION_PARAMETER} {precision!r}; expected one of "
                f"{', '.join(PRECISIONS)}"
            )
        return cls(
            **common,
            inference_threads=_native_number(params, "INFERENCE_NUM_THREADS"),
            compilation_threads=_native_number(params, "COMPILATION_NUM_THREADS"),
            num_streams=(int(streams_raw) if streams_raw.isdigit() else streams_raw) or None,
            performance_hint=hint,
            hint_bf16=bool(bf16),
            precision=precision,
        )

    def compile_settings(self, *, cache_dir: Path | None = None) -> CompileSettings:
        """This process's share of the config's layout (see the module docstring)."""
        n = max(1, self.instances)
        streams = self.num_streams
        if isinstance(streams, int) and streams > 0:
            streams = max(1, streams // n)
        threads = max(1, self.inference_threads // n) if self.inference_threads else None
        precision = "bf16" if self.hint_bf16 else ("fp32" if self.precision == "fp32" else None)
        return CompileSettings(
            precision=precision,
            threads=threads,
            streams=streams,
            hint=self.performance_hint,
            compile_threads=self.compilation_threads,
            cache_dir=cache_dir,
        )


# ---------------------------------------------------------------------------------------------------------------
# The backend's runner
# ---------------------------------------------------------------------------------------------------------------


def _graph_tensor(port: Any) -> GraphTensor:
    element = port.get_element_type().get_type_name()
    shape = port.get_partial_shape()
    dims = None if shape.rank.is_dynamic else tuple(d.get_length() if d.is_static else -1 for d in shape)
    return GraphTensor(port.get_any_name(), _OV_TO_TRITON.get(element), dims, runtime_type=element)


class OvRunner(ModelRunner):
    """One compiled OpenVINO model and one infer request for one model instance (see :class:`ModelRunner`)."""

    runtime = "OpenVINO"

    def __init__(self, *, config: OvModelConfig, model_path: Path | str, cache_dir: Path | None = None):
        super().__init__(config=config, model_path=model_path)
        try:
            self.network = Network(self.model_path, config.compile_settings(cache_dir=cache_dir), output_names=None)
        except ModelConfigError:
            raise
        except Exception as e:  # OpenVINO raises RuntimeError for files it cannot read or compile
            raise ModelConfigError(f"model {config.name!r}: OpenVINO cannot load {self.model_path}: {e}") from e
        compiled = self.network.built.compiled
        self._check_graph([_graph_tensor(p) for p in compiled.inputs], [_graph_tensor(p) for p in compiled.outputs])
        self.network.outputs = [compiled.output(n) for n in self._output_names]

    @property
    def built(self) -> Compiled:
        return self.network.built

    def _infer(self, feed: dict[str, np.ndarray]) -> Sequence[Any]:
        return self.network.run(feed)


__all__ = [
    "PRECISION_PARAMETER",
    "OV_CACHE_ENV",
    "cpu_capabilities",
    "cpu_supports_bf16",
    "default_precision",
    "cache_dir_from_env",
    "CompileSettings",
    "Compiled",
    "compile_network",
    "Network",
    "OvModelConfig",
    "OvRunner",
    "InvalidInputError",
    "InferenceError",
    "ModelConfigError",
]
