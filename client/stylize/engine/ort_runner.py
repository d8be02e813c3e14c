"""ONNX Runtime behind a Triton model config: the logic of the Python-based ``onnxruntime`` backend.

The backend's ``model.py`` only converts between ``pb_utils`` objects and numpy. What every runtime shares (config
parsing, request validation, grouping requests into batches, one outcome per request) is
:mod:`stylize.engine.model_runner`; here:

* :class:`OrtModelConfig` adds the ORT knobs the native C++ backend understands (``intra_op_thread_count``,
  ``inter_op_thread_count``, ``execution_mode``, ``optimization { graph { level } }``, ``enable_mem_arena``,
  ``enable_mem_pattern``), so one ``config.pbtxt`` means the same thing here and in NVIDIA's container;
* :class:`OrtRunner` opens the file in an ONNX Runtime session and runs each batch through it.

``onnxruntime`` is imported lazily so the launcher can import the constants without paying for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from stylize.engine.model_runner import (
    DEFAULT_MODEL_FILENAME,
    TRITON_TO_NUMPY,
    BackendError,
    GraphTensor,
    InferenceError,
    InvalidInputError,
    ModelConfig,
    ModelConfigError,
    ModelRunner,
    TensorConfig,
    check_numpy,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

# Server-wide override of the per-session intra-op thread count (set by the launcher's --ort-threads); like the
# native backend's global --backend-config thread settings, it wins over the model config.
ORT_THREADS_ENV = "STYLIZE_ORT_THREADS"

OrtBackendError = BackendError  # this module's name for the shared base error

# ONNX Runtime's element type strings for the Triton types.
_ORT_TO_TRITON = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "STRING",
}

# Native backend semantics of `optimization { graph { level } }`: -1 basic, 1 basic+extended, 2 none, else all.
_GRAPH_LEVELS = {-1: "ORT_ENABLE_BASIC", 1: "ORT_ENABLE_EXTENDED", 2: "ORT_DISABLE_ALL"}


@dataclass(frozen=True)
class OrtModelConfig(ModelConfig):
    """A model config with the ONNX Runtime knobs of the native backend."""

    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    execution_mode: int | None = None  # 0 sequential, 1 parallel (native backend parameter)
    graph_level: int | None = None
    enable_mem_arena: bool | None = None
    enable_mem_pattern: bool | None = None

    @classmethod
    def from_triton(cls, config: Mapping[str, Any] | str) -> "OrtModelConfig":
        """Parse the model config (the JSON string of ``args["model_config"]`` or the decoded dict)."""
        config = cls.decode(config)
        common = cls.common(config)
        params = ModelConfig(**common).params()
        level = config.get("optimization", {}).get("graph", {}).get("level")
        return cls(
            **common,
            intra_op_threads=params.integer("intra_op_thread_count"),
            inter_op_threads=params.integer("inter_op_thread_count"),
            execution_mode=params.integer("execution_mode"),
            graph_level=None if level is None else int(level),
            enable_mem_arena=params.boolean("enable_mem_arena"),
            enable_mem_pattern=params.boolean("enable_mem_pattern"),
        )

    def session_options(self, *, threads_override: int | None = None) -> "onnxruntime.SessionOptions":
        import onnxruntime as ort

        options = ort.SessionOptions()
        intra = threads_override if threads_override is not None else self.intra_op_threads
        if intra is not None:
            options.intra_op_num_threads = max(0, intra)
        if self.inter_op_threads is not None:
            options.inter_op_num_threads = max(0, self.inter_op_threads)
        if self.execution_mode is not None:
            options.execution_mode = (
                ort.ExecutionMode.ORT_PARALLEL if self.execution_mode == 1 else ort.ExecutionMode.ORT_SEQUENTIAL
            )
        if self.graph_level is not None:
            options.graph_optimization_level = getattr(
                ort.GraphOptimizationLevel, _GRAPH_LEVELS.get(self.graph_level, "ORT_ENABLE_ALL")
            )
        if self.enable_mem_arena is not None:
            options.enable_cpu_mem_arena = self.enable_mem_arena
        if self.enable_mem_pattern is not None:
            options.enable_mem_pattern = self.enable_mem_pattern
        return options


def ort_session(
    model: "str | os.PathLike | bytes",
    *,
    threads: int | None = None,
    inter_threads: int | None = None,
    sequential: bool = False,
    optimize: bool = True,
    options: "onnxruntime.SessionOptions | None" = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> "onnxruntime.InferenceSession":
    """Every ONNX Runtime session of this project is made here: a file or serialized model, ``threads`` intra-op
    (None: ORT's default, all cores), ``inter_threads``, ``sequential`` execution, ``optimize=False`` keeps every node
    (graph optimizations off). ``options`` (a model config's, :meth:`OrtModelConfig.session_options`) is used as it
    is; without it ORT logs errors only."""
    import onnxruntime as ort

    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = max(0, threads)
        if inter_threads is not None:
            options.inter_op_num_threads = max(0, inter_threads)
        if sequential:
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=list(providers))


def threads_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """The server-wide intra-op thread override (``STYLIZE_ORT_THREADS``), or None when unset/empty/0."""
    raw = (os.environ if environ is None else environ).get(ORT_THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ModelConfigError(f"{ORT_THREADS_ENV} must be an integer, got {raw!r}") from None
    return value if value > 0 else None


def _graph_tensor(value: Any) -> GraphTensor:
    return GraphTensor(
        value.name,
        _ORT_TO_TRITON.get(value.type),
        tuple(value.shape) if value.shape is not None else None,
        runtime_type=value.type,
    )


class OrtRunner(ModelRunner):
    """One ONNX Runtime session for one model instance (see :class:`ModelRunner` for ``run``)."""

    runtime = "ONNX Runtime"

    def __init__(
        self,
        *,
        config: OrtModelConfig,
        model_path: Path | str,
        threads_override: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ):
        super().__init__(config=config, model_path=model_path)
        try:
            self.session = ort_session(
                self.model_path, options=config.session_options(threads_override=threads_override), providers=providers
            )
        except Exception as e:  # ORT raises its own pybind exception types here
            raise ModelConfigError(f"model {config.name!r}: ONNX Runtime cannot load {self.model_path}: {e}") from e
        self._check_graph(
            [_graph_tensor(g) for g in self.session.get_inputs()],
            [_graph_tensor(g) for g in self.session.get_outputs()],
        )

    def _infer(self, feed: dict[str, np.ndarray]) -> Sequence[Any]:
        return self.session.run(self._output_names, feed)

    def _is_invalid_argument(self, error: Exception) -> bool:
        return type(error).__name__ == "InvalidArgument"


__all__ = [
    "ORT_THREADS_ENV",
    "DEFAULT_MODEL_FILENAME",
    "TRITON_TO_NUMPY",
    "OrtBackendError",
    "ModelConfigError",
    "InvalidInputError",
    "InferenceError",
    "TensorConfig",
    "OrtModelConfig",
    "OrtRunner",
    "threads_from_env",
    "check_numpy",
]
