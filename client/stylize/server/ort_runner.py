"""ONNX Runtime behind a Triton model config: the logic of the Python-based ``onnxruntime`` backend.

The backend's ``model.py`` only converts between ``pb_utils`` objects and numpy; everything that can go wrong lives
here and is unit-tested without a server:

* :class:`OrtModelConfig` reads the model config JSON Triton hands to ``initialize`` (tensor names, data types and
  dims, ``default_model_filename``, and the ORT knobs the native C++ backend understands, so one ``config.pbtxt``
  means the same thing here and in NVIDIA's container);
* :class:`OrtRunner` validates each request, groups requests whose item shapes are identical into one concatenated
  batch (what the dynamic batcher hands over arrives as a list of requests), runs ONNX Runtime once per group and
  splits the outputs back: one outcome per request, in order, an error for a bad request never failing the others.

``onnxruntime`` is imported lazily so the launcher can import the constants without paying for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

# Server-wide override of the per-session intra-op thread count (set by the launcher's --ort-threads); like the
# native backend's global --backend-config thread settings, it wins over the model config.
ORT_THREADS_ENV = "STYLIZE_ORT_THREADS"

DEFAULT_MODEL_FILENAME = "model.onnx"

# Triton data types (without the TYPE_ prefix) that map onto numpy; BF16 has no numpy type.
TRITON_TO_NUMPY: Mapping[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "STRING": np.dtype(object),
}

# ONNX Runtime's element type strings for the same types.
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


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


class OrtBackendError(Exception):
    """Base class of everything this module raises or returns as a request outcome."""


class ModelConfigError(OrtBackendError):
    """The config.pbtxt and the ONNX file disagree, or the config asks for something unsupported (model won't load)."""


class InvalidInputError(OrtBackendError):
    """A request's tensors do not fit the model (dtype, rank, shape, missing input): Triton's INVALID_ARG."""


class InferenceError(OrtBackendError):
    """ONNX Runtime failed on a batch (or returned something unusable): Triton's INTERNAL."""


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


def _strip_type(data_type: str) -> str:
    return data_type[len("TYPE_"):] if data_type.startswith("TYPE_") else data_type


@dataclass(frozen=True)
class TensorConfig:
    """One input or output as the model config declares it; ``dims`` excludes the batch dimension."""

    name: str
    data_type: str  # Triton data type without the TYPE_ prefix
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def numpy_dtype(self) -> np.dtype:
        return TRITON_TO_NUMPY[self.data_type]

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], *, what: str) -> "TensorConfig":
        name = entry.get("name")
        if not name:
            raise ModelConfigError(f"an {what} of the model config has no name")
        data_type = _strip_type(str(entry.get("data_type", "")))
        if data_type not in TRITON_TO_NUMPY:
            raise ModelConfigError(f"{what} {name!r}: data type {entry.get('data_type')!r} is not supported here")
        if entry.get("reshape"):
            raise ModelConfigError(f"{what} {name!r}: 'reshape' is not supported by this backend")
        # Triton writes int64 fields of the config as JSON strings in some releases: accept both.
        dims = tuple(int(d) for d in entry.get("dims", ()))
        return cls(name=name, data_type=data_type, dims=dims, optional=bool(entry.get("optional", False)))


# Native backend semantics of `optimization { graph { level } }`: -1 basic, 1 basic+extended, 2 none, else all.
_GRAPH_LEVELS = {-1: "ORT_ENABLE_BASIC", 1: "ORT_ENABLE_EXTENDED", 2: "ORT_DISABLE_ALL"}


@dataclass(frozen=True)
class OrtModelConfig:
    """What the backend needs from a Triton model config (parsed once, in ``initialize``)."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    model_filename: str = DEFAULT_MODEL_FILENAME
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    execution_mode: int | None = None  # 0 sequential, 1 parallel (native backend parameter)
    graph_level: int | None = None
    enable_mem_arena: bool | None = None
    enable_mem_pattern: bool | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    @classmethod
    def from_triton(cls, config: Mapping[str, Any] | str) -> "OrtModelConfig":
        """Parse the model config (the JSON string of ``args["model_config"]`` or the decoded dict)."""
        if isinstance(config, str):
            config = json.loads(config)
        name = str(config.get("name", ""))
        inputs = tuple(TensorConfig.from_config(e, what="input") for e in config.get("input", ()))
        outputs = tuple(TensorConfig.from_config(e, what="output") for e in config.get("output", ()))
        if not inputs or not outputs:
            raise ModelConfigError(f"model {name!r}: the config must list its inputs and outputs")
        params = {k: str(v.get("string_value", "")) if isinstance(v, Mapping) else str(v)
                  for k, v in config.get("parameters", {}).items()}

        def int_param(key: str) -> int | None:
            raw = params.get(key, "").strip()
            if not raw:
                return None
            try:
                return int(raw)
            except ValueError:
                raise ModelConfigError(f"model {name!r}: parameter {key} must be an integer, got {raw!r}") from None

        def bool_param(key: str) -> bool | None:
            raw = params.get(key, "").strip().lower()
            if not raw:
                return None
            if raw in ("1", "true", "on", "yes"):
                return True
            if raw in ("0", "false", "off", "no"):
                return False
            raise ModelConfigError(f"model {name!r}: parameter {key} must be 0/1/true/false, got {raw!r}")

        level = config.get("optimization", {}).get("graph", {}).get("level")
        return cls(
            name=name,
            max_batch_size=int(config.get("max_batch_size", 0)),
            inputs=inputs,
            outputs=outputs,
            model_filename=str(config.get("default_model_filename") or DEFAULT_MODEL_FILENAME),
            intra_op_threads=int_param("intra_op_thread_count"),
            inter_op_threads=int_param("inter_op_thread_count"),
            execution_mode=int_param("execution_mode"),
            graph_level=None if level is None else int(level),
            enable_mem_arena=bool_param("enable_mem_arena"),
            enable_mem_pattern=bool_param("enable_mem_pattern"),
            parameters=params,
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
            options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if self.execution_mode == 1
                                      else ort.ExecutionMode.ORT_SEQUENTIAL)
        if self.graph_level is not None:
            options.graph_optimization_level = getattr(
                ort.GraphOptimizationLevel, _GRAPH_LEVELS.get(self.graph_level, "ORT_ENABLE_ALL"))
        if self.enable_mem_arena is not None:
            options.enable_cpu_mem_arena = self.enable_mem_arena
        if self.enable_mem_pattern is not None:
            options.enable_mem_pattern = self.enable_mem_pattern
        return options


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


def check_numpy() -> None:
    """Refuse numpy 2 inside the stub: with it the python backend silently corrupted tensors (seen, see docs)."""
    major = int(np.__version__.split(".")[0])
    if major >= 2:
        raise ModelConfigError(
            f"numpy {np.__version__} is loaded in the Triton python stub ({np.__file__}); the python backend of "
            "tritonserver 2.51 needs numpy<2 (numpy 2 silently corrupts tensors). Install numpy==1.26.4.")


# ---------------------------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------------------------

def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class OrtRunner:
    """One ONNX Runtime session for one model instance.

    ``run`` takes the inputs of every request Triton handed to one ``execute`` call (a mapping name -> array per
    request) and returns one outcome per request: a mapping output name -> array, or an :class:`OrtBackendError`.
    """

    def __init__(self, *, config: OrtModelConfig, model_path: Path | str,
                 threads_override: int | None = None, providers: Sequence[str] = ("CPUExecutionProvider",)):
        import onnxruntime as ort

        self.config = config
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelConfigError(f"model {config.name!r}: ONNX file {self.model_path} does not exist")
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), sess_options=config.session_options(threads_override=threads_override),
                providers=list(providers))
        except Exception as e:  # ORT raises its own pybind exception types here
            raise ModelConfigError(f"model {config.name!r}: ONNX Runtime cannot load {self.model_path}: {e}") from e
        self._graph_inputs = self._check_tensors(config.inputs, self.session.get_inputs(), "input")
        self._check_tensors(config.outputs, self.session.get_outputs(), "output")
        self._output_names = [t.name for t in config.outputs]

    # ---- load-time checks ------------------------------------------------------------------------------------
    def _check_tensors(self, declared: Sequence[TensorConfig], graph: Sequence[Any], what: str) -> dict[str, tuple]:
        """Config tensors must exist in the graph with the same type and a compatible rank; returns graph shapes."""
        by_name = {g.name: g for g in graph}
        shapes: dict[str, tuple] = {}
        for t in declared:
            g = by_name.get(t.name)
            if g is None:
                raise ModelConfigError(
                    f"model {self.config.name!r}: config {what} {t.name!r} is not in the ONNX graph "
                    f"(graph {what}s: {', '.join(sorted(by_name))})")
            graph_type = _ORT_TO_TRITON.get(g.type)
            if graph_type != t.data_type:
                raise ModelConfigError(
                    f"model {self.config.name!r}: {what} {t.name!r} is TYPE_{t.data_type} in the config but "
                    f"{g.type} in the ONNX graph")
            shape = tuple(g.shape) if g.shape is not None else None
            if shape is not None:
                expected_rank = len(t.dims) + (1 if self.config.batching else 0)
                if len(shape) != expected_rank:
                    raise ModelConfigError(
                        f"model {self.config.name!r}: {what} {t.name!r} has rank {len(shape)} in the ONNX graph, "
                        f"the config implies {expected_rank} (dims {_shape_text(t.dims)}"
                        f"{' plus the batch dimension' if self.config.batching else ''})")
            shapes[t.name] = shape
        return shapes

    # ---- request checks --------------------------------------------------------------------------------------
    def validate(self, inputs: Mapping[str, np.ndarray | None]) -> int:
        """Check one request; returns its batch size (1 without batching). Raises :class:`InvalidInputError`."""
        cfg = self.config
        known = {t.name for t in cfg.inputs}
        unknown = sorted(k for k, v in inputs.items() if v is not None and k not in known)
        if unknown:
            raise InvalidInputError(f"unexpected input(s) {', '.join(unknown)} for model {cfg.name!r}")
        batch: int | None = None
        for t in cfg.inputs:
            array = inputs.get(t.name)
            if array is None:
                if t.optional:
                    continue
                raise InvalidInputError(f"missing input {t.name!r} for model {cfg.name!r}")
            if array.dtype != t.numpy_dtype:
                raise InvalidInputError(
                    f"input {t.name!r} has data type {array.dtype}, model {cfg.name!r} expects "
                    f"TYPE_{t.data_type} ({t.numpy_dtype})")
            item_shape = array.shape[1:] if cfg.batching else array.shape
            if cfg.batching:
                if array.ndim == 0:
                    raise InvalidInputError(f"input {t.name!r} is a scalar; expected a batch of {_shape_text(t.dims)}")
                n = array.shape[0]
                if not 1 <= n <= cfg.max_batch_size:
                    raise InvalidInputError(
                        f"input {t.name!r} has batch size {n}; model {cfg.name!r} accepts 1..{cfg.max_batch_size}")
                if batch is not None and n != batch:
                    raise InvalidInputError(f"inputs of one request disagree on the batch size ({batch} vs {n})")
                batch = n
            expected = self._expected_item_shape(t)
            if len(item_shape) != len(expected) or any(
                    e > 0 and d != e for d, e in zip(item_shape, expected)):
                raise InvalidInputError(
                    f"input {t.name!r} has shape {_shape_text(array.shape)}; model {cfg.name!r} expects "
                    f"{'[batch, ' + _shape_text(expected)[1:] if cfg.batching else _shape_text(expected)} "
                    "(-1 = any size)")
        return batch or 1

    def _expected_item_shape(self, t: TensorConfig) -> tuple[int, ...]:
        """Config dims, tightened by static dims of the ONNX graph (a config may say -1 where the graph says 3)."""
        graph = self._graph_inputs.get(t.name)
        if graph is None:
            return t.dims
        graph_items = graph[1:] if self.config.batching else graph
        return tuple(
            d if d > 0 else (g if isinstance(g, int) and g > 0 else -1)
            for d, g in zip(t.dims, graph_items))

    # ---- execution -------------------------------------------------------------------------------------------
    def run(self, requests: Sequence[Mapping[str, np.ndarray | None]]) -> list[Any]:
        """One outcome per request, in order: ``dict[name, ndarray]`` or an :class:`OrtBackendError`."""
        outcomes: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, int]]] = {}  # shape key -> [(request index, batch size)]
        for i, inputs in enumerate(requests):
            try:
                n = self.validate(inputs)
            except InvalidInputError as e:
                outcomes[i] = e
                continue
            if self.config.batching:
                key = tuple((t.name, None if inputs.get(t.name) is None else inputs[t.name].shape[1:])
                            for t in self.config.inputs)
            else:
                key = ("request", i)  # without a batch dimension there is nothing to concatenate along
            groups.setdefault(key, []).append((i, n))

        for members in groups.values():
            for chunk in self._chunks(members):
                self._run_group(requests, chunk, outcomes)
        return outcomes

    def _chunks(self, members: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """Split a group so no concatenated batch exceeds max_batch_size (Triton's batcher already ensures it;
        a direct caller may not)."""
        limit = self.config.max_batch_size if self.config.batching else 1
        chunks: list[list[tuple[int, int]]] = []
        current: list[tuple[int, int]] = []
        total = 0
        for member in members:
            if current and total + member[1] > limit:
                chunks.append(current)
                current, total = [], 0
            current.append(member)
            total += member[1]
        if current:
            chunks.append(current)
        return chunks

    def _run_group(self, requests: Sequence[Mapping[str, np.ndarray | None]],
                   chunk: list[tuple[int, int]], outcomes: list[Any]) -> None:
        feed: dict[str, np.ndarray] = {}
        for t in self.config.inputs:
            parts = [requests[i].get(t.name) for i, _ in chunk]
            if parts[0] is None:  # an optional input absent from the whole group
                continue
            feed[t.name] = np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0))
        total = sum(n for _, n in chunk)
        try:
            results = self.session.run(self._output_names, feed)
        except Exception as e:  # noqa: BLE001 - any ORT failure becomes an error of this group, never a crash
            shapes = ", ".join(f"{k} {_shape_text(v.shape)}" for k, v in feed.items())
            error_cls = InvalidInputError if type(e).__name__ == "InvalidArgument" else InferenceError
            err = error_cls(f"ONNX Runtime failed on {len(chunk)} request(s) ({shapes}) of model "
                            f"{self.config.name!r}: {e}")
            for i, _ in chunk:
                outcomes[i] = err
            return
        try:
            split = self._split(results, [n for _, n in chunk], total)
        except InferenceError as err:
            for i, _ in chunk:
                outcomes[i] = err
            return
        for (i, _), outputs in zip(chunk, split):
            outcomes[i] = outputs

    def _split(self, results: Sequence[Any], sizes: list[int], total: int) -> list[dict[str, np.ndarray]]:
        per_request: list[dict[str, np.ndarray]] = [{} for _ in sizes]
        offsets = np.cumsum(sizes)[:-1]
        for t, value in zip(self.config.outputs, results):
            array = np.asarray(value)
            if array.dtype != t.numpy_dtype:
                raise InferenceError(f"output {t.name!r} came back as {array.dtype}, the config says "
                                     f"TYPE_{t.data_type}")
            if not self.config.batching:
                per_request[0][t.name] = array
                continue
            if array.ndim == 0 or array.shape[0] != total:
                raise InferenceError(
                    f"output {t.name!r} has shape {_shape_text(array.shape)}; expected a leading batch dimension "
                    f"of {total}")
            for slot, part in zip(per_request, np.split(array, offsets, axis=0)):
                slot[t.name] = part
        return per_request


__all__ = [
    "ORT_THREADS_ENV", "DEFAULT_MODEL_FILENAME", "TRITON_TO_NUMPY",
    "OrtBackendError", "ModelConfigError", "InvalidInputError", "InferenceError",
    "TensorConfig", "OrtModelConfig", "OrtRunner", "threads_from_env", "check_numpy",
]
