"""A network runtime behind a Triton model config: what the Python-based ``onnxruntime`` and ``openvino`` backends share.

The backends' ``model.py`` files only convert between ``pb_utils`` objects and numpy; everything that can go wrong
lives here (and in :mod:`stylize.engine.ort_runner` / :mod:`stylize.engine.ov_runner`, one per runtime) and is
unit-tested without a server:

* :class:`ModelConfig` reads the model config JSON Triton hands to ``initialize``: tensor names, data types and dims,
  ``default_model_filename``, the instance count and the parameters (each runtime's subclass reads the knobs its
  native C++ backend understands, so one ``config.pbtxt`` means the same thing here and in NVIDIA's container);
* :class:`ModelRunner` validates each request, groups requests whose item shapes are identical into one concatenated
  batch (what the dynamic batcher hands over arrives as a list of requests), runs the runtime once per group and
  splits the outputs back: one outcome per request, in order, an error for a bad request never failing the others.
  A subclass opens the file (:meth:`ModelRunner._graph_tensors`) and runs one batch (:meth:`ModelRunner._infer`).

Nothing here imports a runtime, so the launcher and the build can import the constants for free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

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


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


MAX_REQUEST_PIXELS = "max_request_pixels"  # config parameter: the pixels one request may carry (the build writes it)


class BackendError(Exception):
    """Base class of everything the runners raise or return as a request outcome."""


class ModelConfigError(BackendError):
    """The config.pbtxt and the ONNX file disagree, or the config asks for something unsupported (model won't load)."""


class InvalidInputError(BackendError):
    """A request's tensors do not fit the model (dtype, rank, shape, missing input): Triton's INVALID_ARG."""


class InferenceError(BackendError):
    """The runtime failed on a batch (or returned something unusable): Triton's INTERNAL."""


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


def _strip_type(data_type: str) -> str:
    return data_type[len("TYPE_") :] if data_type.startswith("TYPE_") else data_type


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


class Parameters:
    """A model config's ``parameters`` (string values), read with the model's name in every error."""

    def __init__(self, model: str, values: Mapping[str, str]):
        self.model, self.values = model, dict(values)

    def text(self, key: str) -> str:
        return self.values.get(key, "").strip()

    def integer(self, key: str) -> int | None:
        raw = self.text(key)
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise ModelConfigError(f"model {self.model!r}: parameter {key} must be an integer, got {raw!r}") from None

    def boolean(self, key: str) -> bool | None:
        raw = self.text(key).lower()
        if not raw:
            return None
        if raw in ("1", "true", "on", "yes"):
            return True
        if raw in ("0", "false", "off", "no"):
            return False
        raise ModelConfigError(f"model {self.model!r}: parameter {key} must be 0/1/true/false, got {raw!r}")


@dataclass(frozen=True)
class ModelConfig:
    """What every runner needs from a Triton model config (parsed once, in ``initialize``)."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    model_filename: str = DEFAULT_MODEL_FILENAME
    instances: int = 1  # instance_group counts summed: each instance of a Python-based backend is its own process
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    @staticmethod
    def decode(config: Mapping[str, Any] | str) -> dict[str, Any]:
        """The JSON string of ``args["model_config"]`` (or the decoded dict) as a dict."""
        return json.loads(config) if isinstance(config, str) else dict(config)

    @staticmethod
    def common(config: Mapping[str, Any]) -> dict[str, Any]:
        """The runtime-neutral fields of :class:`ModelConfig` from a decoded config (subclasses add their own)."""
        name = str(config.get("name", ""))
        inputs = tuple(TensorConfig.from_config(e, what="input") for e in config.get("input", ()))
        outputs = tuple(TensorConfig.from_config(e, what="output") for e in config.get("output", ()))
        if not inputs or not outputs:
            raise ModelConfigError(f"model {name!r}: the config must list its inputs and outputs")
        params = {
            k: str(v.get("string_value", "")) if isinstance(v, Mapping) else str(v)
            for k, v in config.get("parameters", {}).items()
        }
        instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", ())) or 1
        return {
            "name": name,
            "max_batch_size": int(config.get("max_batch_size", 0)),
            "inputs": inputs,
            "outputs": outputs,
            "model_filename": str(config.get("default_model_filename") or DEFAULT_MODEL_FILENAME),
            "instances": instances,
            "parameters": params,
        }

    @classmethod
    def from_triton(cls, config: Mapping[str, Any] | str) -> "ModelConfig":
        return cls(**cls.common(cls.decode(config)))

    def params(self) -> Parameters:
        return Parameters(self.name, self.parameters)


def check_numpy() -> None:
    """Refuse numpy 2 inside the stub: with it the python backend silently corrupted tensors (seen, see docs)."""
    major = int(np.__version__.split(".")[0])
    if major >= 2:
        raise ModelConfigError(
            f"numpy {np.__version__} is loaded in the Triton python stub ({np.__file__}); the python backend of "
            "tritonserver 2.51 needs numpy<2 (numpy 2 silently corrupts tensors). Install numpy==1.26.4."
        )


# ---------------------------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------------------------


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class GraphTensor:
    """A graph input or output as the runtime sees it: Triton type (None: unmappable) and shape (None: unknown;
    a dimension that is not a positive int is dynamic)."""

    name: str
    data_type: str | None
    shape: tuple | None
    runtime_type: str = ""  # the runtime's own spelling, for error messages


class ModelRunner:
    """One runtime session for one model instance.

    ``run`` takes the inputs of every request Triton handed to one ``execute`` call (a mapping name -> array per
    request) and returns one outcome per request: a mapping output name -> array, or a :class:`BackendError`.
    Subclasses set ``runtime`` (for messages), open the file in ``__init__`` and call :meth:`_check_graph`.
    """

    runtime = "the runtime"

    def __init__(self, *, config: ModelConfig, model_path: Path | str):
        self.config = config
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelConfigError(f"model {config.name!r}: ONNX file {self.model_path} does not exist")
        self._output_names = [t.name for t in config.outputs]
        self._graph_inputs: dict[str, tuple | None] = {}
        # the most pixels (every axis but the last, the channels) one request's frames may carry; None: no limit
        self.max_request_pixels = config.params().integer(MAX_REQUEST_PIXELS)

    def _check_graph(self, inputs: Sequence[GraphTensor], outputs: Sequence[GraphTensor]) -> None:
        self._graph_inputs = self._check_tensors(self.config.inputs, inputs, "input")
        self._check_tensors(self.config.outputs, outputs, "output")

    def _infer(self, feed: dict[str, np.ndarray]) -> Sequence[Any]:
        """The outputs (in ``config.outputs`` order) of one batch; raises the runtime's own errors."""
        raise NotImplementedError

    def _is_invalid_argument(self, error: Exception) -> bool:
        """Whether a runtime error means the input was wrong (INVALID_ARG) rather than the runtime (INTERNAL)."""
        return False

    # ---- load-time checks ------------------------------------------------------------------------------------
    def _check_tensors(
        self, declared: Sequence[TensorConfig], graph: Sequence[GraphTensor], what: str
    ) -> dict[str, tuple | None]:
        """Config tensors must exist in the graph with the same type and a compatible rank; returns graph shapes."""
        by_name = {g.name: g for g in graph}
        shapes: dict[str, tuple | None] = {}
        for t in declared:
            g = by_name.get(t.name)
            if g is None:
                raise ModelConfigError(
                    f"model {self.config.name!r}: config {what} {t.name!r} is not in the ONNX graph "
                    f"(graph {what}s: {', '.join(sorted(by_name))})"
                )
            if g.data_type != t.data_type:
                raise ModelConfigError(
                    f"model {self.config.name!r}: {what} {t.name!r} is TYPE_{t.data_type} in the config but "
                    f"{g.runtime_type or g.data_type} in the ONNX graph"
                )
            if g.shape is not None:
                expected_rank = len(t.dims) + (1 if self.config.batching else 0)
                if len(g.shape) != expected_rank:
                    raise ModelConfigError(
                        f"model {self.config.name!r}: {what} {t.name!r} has rank {len(g.shape)} in the ONNX graph, "
                        f"the config implies {expected_rank} (dims {_shape_text(t.dims)}"
                        f"{' plus the batch dimension' if self.config.batching else ''})"
                    )
            shapes[t.name] = g.shape
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
                    f"TYPE_{t.data_type} ({t.numpy_dtype})"
                )
            item_shape = array.shape[1:] if cfg.batching else array.shape
            if cfg.batching:
                if array.ndim == 0:
                    raise InvalidInputError(f"input {t.name!r} is a scalar; expected a batch of {_shape_text(t.dims)}")
                n = array.shape[0]
                if not 1 <= n <= cfg.max_batch_size:
                    raise InvalidInputError(
                        f"input {t.name!r} has batch size {n}; model {cfg.name!r} accepts 1..{cfg.max_batch_size}"
                    )
                if batch is not None and n != batch:
                    raise InvalidInputError(f"inputs of one request disagree on the batch size ({batch} vs {n})")
                batch = n
            expected = self._expected_item_shape(t)
            if len(item_shape) != len(expected) or any(e > 0 and d != e for d, e in zip(item_shape, expected)):
                raise InvalidInputError(
                    f"input {t.name!r} has shape {_shape_text(array.shape)}; model {cfg.name!r} expects "
                    f"{'[batch, ' + _shape_text(expected)[1:] if cfg.batching else _shape_text(expected)} "
                    "(-1 = any size)"
                )
            if (
                self.max_request_pixels
                and array.ndim >= 3
                and (pixels := int(np.prod(array.shape[:-1], dtype=np.int64))) > self.max_request_pixels
            ):
                # checked before the runtime sees it: a request's memory grows with its pixels (docs/reliability.md)
                raise InvalidInputError(
                    f"input {t.name!r} of shape {_shape_text(array.shape)} carries {pixels:,} pixels; model "
                    f"{cfg.name!r} takes at most {self.max_request_pixels:,} per request ({MAX_REQUEST_PIXELS}): send "
                    "fewer frames per request, or tiles (StylizeClient.infer_frames tiles large frames)"
                )
            if 0 in item_shape:  # a 0x0 frame: the runtime fails inside the graph (a Conv or Reshape: INTERNAL)
                raise InvalidInputError(
                    f"input {t.name!r} has shape {_shape_text(array.shape)}: an empty axis; model {cfg.name!r} "
                    "needs at least one element along each axis (frames of at least 1x1 pixels)"
                )
        return batch or 1

    def _expected_item_shape(self, t: TensorConfig) -> tuple[int, ...]:
        """Config dims, tightened by static dims of the ONNX graph (a config may say -1 where the graph says 3)."""
        graph = self._graph_inputs.get(t.name)
        if graph is None:
            return t.dims
        graph_items = graph[1:] if self.config.batching else graph
        return tuple(d if d > 0 else (g if isinstance(g, int) and g > 0 else -1) for d, g in zip(t.dims, graph_items))

    # ---- execution -------------------------------------------------------------------------------------------
    def run(self, requests: Sequence[Mapping[str, np.ndarray | None]]) -> list[Any]:
        """One outcome per request, in order: ``dict[name, ndarray]`` or a :class:`BackendError`."""
        outcomes: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, int]]] = {}  # shape key -> [(request index, batch size)]
        for i, inputs in enumerate(requests):
            try:
                n = self.validate(inputs)
            except InvalidInputError as e:
                outcomes[i] = e
                continue
            if self.config.batching:
                key = tuple(
                    (t.name, None if inputs.get(t.name) is None else inputs[t.name].shape[1:])
                    for t in self.config.inputs
                )
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

    def _run_group(
        self, requests: Sequence[Mapping[str, np.ndarray | None]], chunk: list[tuple[int, int]], outcomes: list[Any]
    ) -> None:
        feed: dict[str, np.ndarray] = {}
        for t in self.config.inputs:
            parts = [requests[i].get(t.name) for i, _ in chunk]
            if parts[0] is None:  # an optional input absent from the whole group
                continue
            feed[t.name] = np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0))
        total = sum(n for _, n in chunk)
        try:
            results = self._infer(feed)
        except Exception as e:  # noqa: BLE001 - any runtime failure becomes an error of this group, never a crash
            shapes = ", ".join(f"{k} {_shape_text(v.shape)}" for k, v in feed.items())
            error_cls = InvalidInputError if self._is_invalid_argument(e) else InferenceError
            err = error_cls(
                f"{self.runtime} failed on {len(chunk)} request(s) ({shapes}) of model {self.config.name!r}: {e}"
            )
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
                raise InferenceError(
                    f"output {t.name!r} came back as {array.dtype}, the config says TYPE_{t.data_type}"
                )
            if not self.config.batching:
                per_request[0][t.name] = array
                continue
            if array.ndim == 0 or array.shape[0] != total:
                raise InferenceError(
                    f"output {t.name!r} has shape {_shape_text(array.shape)}; expected a leading batch dimension "
                    f"of {total}"
                )
            for slot, part in zip(per_request, np.split(array, offsets, axis=0)):
                slot[t.name] = part
        return per_request


__all__ = [
    "DEFAULT_MODEL_FILENAME",
    "TRITON_TO_NUMPY",
    "BackendError",
    "ModelConfigError",
    "InvalidInputError",
    "InferenceError",
    "TensorConfig",
    "Parameters",
    "ModelConfig",
    "GraphTensor",
    "ModelRunner",
    "check_numpy",
]
