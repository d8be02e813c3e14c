"""Python SDK over Triton's gRPC API: stylize or upscale an image in one line.

    >>> from stylize.sdk.client import StylizeClient
    >>> with StylizeClient(model="animeganv2") as client:
    ...     anime = client.infer(photo)              # numpy HxWx3 uint8 in -> numpy HxWx3 uint8 out

What ``infer`` returns is decided by what it is given:

    numpy array (HxW, HxWx1, HxWx3 or HxWx4 uint8)  -> numpy uint8 array of the same layout (gray stays gray,
                                                       alpha is kept), sides times the model's scale
    PIL image (any mode)                            -> PIL image: RGB, RGBA (alpha kept), L (gray) or I;16 (16-bit)
    path (str or os.PathLike, the file is read)     -> the encoded result as bytes (PNG unless output_format says)
    bytes (an encoded image file)                   -> the encoded result as bytes

Paths and bytes are "encoded in, encoded out": the file goes to the server untouched (the server decodes it and applies
the EXIF orientation) and the server's encoded answer comes back untouched; ``infer_file(src, dst)`` writes it to disk.

Options (``infer(img, output_format="JPEG", quality=90, outscale=2.0, max_side=1024, tile_size=128)``) are the
ensembles' request options (stylize.contract.descriptors: OUTPUT_FORMAT, QUALITY, OUTSCALE, MAX_SIDE, TILE_SIZE). The SDK sends
them as the ensembles' optional input tensors, the only way the server takes them: the image steps hold Triton's
response cache, whose key is the inputs only, so an option sent as a request parameter could be answered from the
cache entry of the same image with other options; the server refuses every request parameter (INVALID_ARGUMENT
naming the input to send instead). An option a model does not take (max_side without a configured bound, tile_size
on an untiled model) is refused before any request.

Admin APIs (stylize.contract.access): the repository index and the model configs answer only with the server's admin key
(``admin_key=``, default $STYLIZE_ADMIN_KEY). Inference, raw frames and video never need it (the network's shapes
come from the open metadata API); ``models()`` and ``health()`` use the index and configs with the key and the open
metadata and readiness APIs without it (then ``ModelInfo.weights`` is "?"). A wrong key raises AccessDenied.

Transport: message limits are raised to 2 GiB on both directions (the 4 MB gRPC default is the most reported Triton
client error), optional gzip/deflate compression, a timeout per attempt, and retries with exponential backoff and jitter
on UNAVAILABLE only (server down, restarting, or not reachable yet); INVALID_ARGUMENT, NOT_FOUND, ... fail at once.
Every error is one of stylize.contract.errors; no tritonclient or grpc exception escapes.

System shared memory is deliberately not used. Measured here (2 cores, loopback, Triton 2.51, raw-frame path): it
saved 2 ms per 256x256 frame (0.2 MB in, 0.8 MB out) and 11 ms per 512x512 frame against a stand-in network that costs
nothing, while the real animevideo_x2 network takes about 1.3 s per 256x256 frame on this CPU: under 1 %, lost in the
noise. It would add region lifecycle (register, one region per request in flight, cleanup after a crash), work only
with a server on the same host, and tritonclient's helper needs setuptools' pkg_resources at run time.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Protocol, Union

import numpy as np

from stylize.contract import access
from stylize.contract.descriptors import (
    ENCODED_IMAGE,
    ENCODED_RESULT,
    MAX_SIDE,
    NET_VERSION,
    OUTPUT_FORMAT,
    OUTSCALE,
    QUALITY,
    REGISTRY,
    TILE_SIZE,
    ModelDescriptor,
    RequestOption,
)
from stylize.contract.errors import InvalidInput, ModelNotFound, ServerUnavailable, StylizeError, from_triton
from stylize.contract.fileio import write_atomic  # outputs: atomic, with the umask's mode like any open()
from stylize.contract.frames import RawModel, crop_frames, pad_to_multiple
from stylize.sdk.connection import default_admin_key, default_url

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from stylize.sdk.metrics import ClientMetrics
    from stylize.sdk.video import VideoReport

MAX_MESSAGE_BYTES = 2**31 - 1  # gRPC's hard ceiling (INT32_MAX); the server side uses the same
DEFAULT_MODEL = "animeganv2"

# Request options of the image ensembles, by keyword of infer(); names, tensors and dtypes come from the descriptors.
OPTIONS: dict[str, RequestOption] = {o.name: o for o in (OUTPUT_FORMAT, QUALITY, OUTSCALE, MAX_SIDE, TILE_SIZE)}
OUTPUT_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG", "WEBP": "WEBP"}

ImageLike = Union[np.ndarray, "PILImage.Image", str, os.PathLike, bytes, bytearray, memoryview]


# ---------------------------------------------------------------------------------------------------------------
# Input / output kinds
# ---------------------------------------------------------------------------------------------------------------


def kind_of(img: object) -> str:
    """'array' | 'pil' | 'path' | 'bytes' (what infer will return the result as)."""
    if isinstance(img, np.ndarray):
        return "array"
    if isinstance(img, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(img, (str, os.PathLike)):
        return "path"
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        pass
    else:
        if isinstance(img, Image.Image):
            return "pil"
    raise InvalidInput(f"unsupported input type {type(img).__name__}: give a numpy array, a PIL image, a path or bytes")


def _png(image: "PILImage.Image") -> bytes:
    out = io.BytesIO()
    # level 1: the input is decoded once on the server, and encoding time is on the caller's critical path
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def array_to_image(arr: np.ndarray) -> "PILImage.Image":
    from PIL import Image

    if arr.dtype != np.uint8:
        raise InvalidInput(f"array dtype is {arr.dtype}; expected uint8 (0..255)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        mode = "L"
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        mode = "RGB" if arr.shape[2] == 3 else "RGBA"
    else:
        raise InvalidInput(f"array shape {arr.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if 0 in arr.shape[:2]:
        raise InvalidInput(f"array shape {arr.shape} has an empty side")
    return Image.fromarray(np.ascontiguousarray(arr), mode)


def encode_input(img: ImageLike) -> tuple[bytes, str]:
    """(bytes sent to the server, kind of the input). Arrays and PIL images become lossless PNG."""
    kind = kind_of(img)
    if kind == "array":
        data = _png(array_to_image(img))
    elif kind == "pil":
        im = img if img.mode in ("RGB", "RGBA", "L", "LA", "P", "I;16") else img.convert("RGB")
        data = _png(im)
    elif kind == "path":
        try:
            data = Path(img).read_bytes()
        except OSError as e:
            raise InvalidInput(f"cannot read {img}: {e.strerror or e}", reason=f"cannot read file: {e.strerror or e}"
                               ) from None
    else:
        data = bytes(img)
    if not data:
        raise InvalidInput("empty input: no image bytes", reason="empty input: no image bytes")
    return data, kind


_KEPT_MODES = ("RGB", "RGBA", "L", "I;16")  # what the server sends back for RGB, alpha, gray and 16-bit inputs


def decode_output(data: bytes, kind: str, *, like: np.ndarray | None = None) -> Any:
    """The server's encoded result as the kind the caller gave (see the module docstring).

    The server answers in the input's layout (gray stays gray, alpha is kept); ``like`` (the input array) restores a
    trailing channel axis of 1 that PNG cannot express.
    """
    if kind in ("path", "bytes"):
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in _KEPT_MODES:
            out = im.copy()
        else:  # palette, LA, ...: what the server does not send today
            out = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    if kind == "pil":
        return out
    arr = np.asarray(out)
    if like is not None and like.ndim == 3 and like.shape[2] == 1 and arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    return arr


def image_format(data: bytes) -> str | None:
    """'PNG' | 'JPEG' | 'WEBP' | ... from the magic bytes (None if unknown)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def build_options(options: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """Validate the **options of infer: {option name: typed value}; None values mean "not set" and are dropped.

    With a ``model`` known to the descriptors, options that model does not take are refused here (the server would
    refuse them too, after the upload).
    """
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key not in OPTIONS:
            raise TypeError(f"unknown option {key!r}; known: {', '.join(OPTIONS)}")
        if value is None:
            continue  # "not set": the CLI passes every flag
        if key == "output_format":
            fmt = OUTPUT_FORMATS.get(str(value).strip().upper().lstrip("."))
            if fmt is None:
                raise InvalidInput(f"output_format {value!r}; expected PNG, JPEG or WEBP")
            value = fmt
        elif key == "quality":
            value = int(value)
            if not 1 <= value <= 100:
                raise InvalidInput(f"quality {value}; expected 1..100")
        elif key == "outscale":
            value = float(value)
            if not value > 0:
                raise InvalidInput(f"outscale {value}; expected > 0")
        else:  # max_side, tile_size: sides in pixels
            value = int(value)
            if value < 1:
                raise InvalidInput(f"{key} {value}; expected >= 1")
        values[key] = value
    desc = _descriptor(model) if model else None
    if desc is not None and values:
        allowed = {o.name for o in desc.options}
        for key in values:
            if key not in allowed:
                why = "it has no max_side" if key == MAX_SIDE.name else "it is not tiled"
                raise InvalidInput(f"option {key} does not apply to {model} ({why})",
                                   reason=f"option {key} does not apply to {model}", model=model)
    return values


def option_tensors(values: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """(tensor name, Triton dtype, [1, 1] array) of each option: what goes on the wire as optional inputs."""
    out = []
    for key, value in values.items():
        t = OPTIONS[key].tensor
        if t.dtype == "BYTES":
            arr = np.array([[str(value).encode()]], dtype=np.object_)
        else:
            arr = np.array([[value]], dtype=t.numpy_dtype)
        out.append((t.name, t.dtype, arr.reshape(1, *t.dims)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Raw frames (the `<id>_net` path): padding to the network's size rules happens here, cropping after
# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# Retries, statistics, observers
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, on ServerUnavailable only.

    ``attempts`` counts the first try (None: no limit by count); ``deadline`` stops retrying once that many seconds
    have passed since the first try (None: no limit by time). A server restart takes tens of seconds, hence 60 s.
    """

    attempts: int | None = None
    deadline: float | None = 60.0
    initial_backoff: float = 0.25
    max_backoff: float = 4.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- this fraction of each delay, so many clients do not retry in lockstep

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff or self.multiplier < 1:
            raise ValueError("backoff must satisfy 0 <= initial_backoff <= max_backoff and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def retryable(self, error: BaseException) -> bool:
        return isinstance(error, ServerUnavailable)

    def should_retry(self, error: BaseException, attempt: int, elapsed: float) -> bool:
        """``attempt``: tries made so far (1 after the first failure); ``elapsed``: seconds since the first try."""
        if not self.retryable(error):
            return False
        if self.attempts is not None and attempt >= self.attempts:
            return False
        return self.deadline is None or elapsed < self.deadline

    def backoff(self, attempt: int, *, remaining: float | None = None, rng: random.Random | None = None) -> float:
        """Delay before try ``attempt + 1``; capped to ``remaining`` seconds so the last try lands at the deadline."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        r = (rng or random).random()
        delay = base * (1 + self.jitter * (2 * r - 1))
        return max(0.0, min(delay, remaining)) if remaining is not None else delay


NO_RETRY = RetryPolicy(attempts=1)


class RequestObserver(Protocol):
    """Hooks the client calls for every attempt; ClientStats and stylize.sdk.metrics.ClientMetrics implement it."""

    def observe_request(self, model: str, seconds: float, error: StylizeError | None) -> None: ...

    def observe_retry(self, model: str, error: StylizeError, delay: float) -> None: ...


@dataclass
class ClientStats:
    """What happened on this client, for summaries: attempts, successes, retries, errors by kind, and outages (from
    the first UNAVAILABLE to the next success of a request sent after it: with requests in flight, one sent before
    the server went away can still succeed after another has failed, and does not end the outage)."""

    requests: int = 0  # attempts, retries included
    ok: int = 0
    retries: int = 0
    retry_wait_seconds: float = 0.0  # backoff summed over requests (concurrent waits add up)
    errors: Counter = field(default_factory=Counter)  # kind -> count, every failed attempt
    outages: int = 0
    outage_seconds: float = 0.0
    _outage_start: float | None = field(default=None, repr=False, compare=False)
    _outage_seen: float = field(default=0.0, repr=False, compare=False)  # when the outage's first failure came back
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def observe_request(self, model: str, seconds: float, error: StylizeError | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            if error is None:
                self.ok += 1
                if self._outage_start is not None and now - seconds >= self._outage_seen:
                    self.outage_seconds += now - self._outage_start
                    self._outage_start = None
            else:
                self.errors[error.kind] += 1
                if isinstance(error, ServerUnavailable) and self._outage_start is None:
                    self._outage_start, self._outage_seen = now - seconds, now
                    self.outages += 1

    def observe_retry(self, model: str, error: StylizeError, delay: float) -> None:
        with self._lock:
            self.retries += 1
            self.retry_wait_seconds += delay

    def summary(self) -> str:
        with self._lock:
            text = f"{self.ok} requests ok"
            if self.outages:
                ongoing = " (still unavailable)" if self._outage_start is not None else ""
                text += (f"; the server was unavailable {self.outages} time{'s' if self.outages > 1 else ''} for "
                         f"{self.outage_seconds:.1f} s{ongoing}, {self.retries} attempts retried")
            elif self.retries:
                text += f", {self.retries} attempts retried"
            if self.errors:
                text += "; failed attempts: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
            return text


# ---------------------------------------------------------------------------------------------------------------
# Listing and health
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    id: str  # what you pass as model=
    task: str  # style | sr | vsr
    scale: int
    weights: str  # real | untrained ("?" without the admin key: the status is in the model config)
    license: str
    versions: tuple[int, ...]  # ready versions of the network (pin one with version=)
    ready: bool  # the client-facing model is ready
    title: str = ""


@dataclass(frozen=True)
class Health:
    url: str
    live: bool
    ready: bool
    server_version: str | None
    models: dict[str, str]  # "name/version" -> state (READY, UNAVAILABLE, LOADING, ...)
    seconds: float  # time the checks took
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.live and self.ready


def _model_infos(index: list[dict], configs: dict[str, dict]) -> list[ModelInfo]:
    """Group Triton models by their `stylize_id` parameter; one ModelInfo per client-facing model."""
    ready_versions: dict[str, list[int]] = {}
    states: dict[str, set[str]] = {}
    for entry in index:
        states.setdefault(entry["name"], set()).add(entry.get("state", ""))
        if entry.get("state") == "READY" and entry.get("version"):
            ready_versions.setdefault(entry["name"], []).append(int(entry["version"]))
    infos = []
    for name, config in sorted(configs.items()):
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if not params.get("stylize_id") or not _client_facing(name):
            continue  # a composing model (python step, network, the nested cached ensemble), not a client-facing one
        desc = _descriptor(name)
        infos.append(ModelInfo(
            id=name,
            task=params.get("task", ""),
            scale=int(params.get("scale", "0") or 0),
            weights=params.get("weights", ""),
            license=params.get("license", ""),
            versions=tuple(sorted(ready_versions.get(_raw_name(name), ()))),
            ready="READY" in states.get(name, ()),
            title=(desc.title + (" (INT8)" if name != desc.id else "")) if desc is not None else "",
        ))
    return infos


# ---------------------------------------------------------------------------------------------------------------
# Shared request building
# ---------------------------------------------------------------------------------------------------------------


def _channel_args(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # gRPC's own reconnect backoff grows to 120 s by default: after a server restart the channel would sit idle
        # long after the server is back. Keep it short; our RetryPolicy paces the calls.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def _descriptor(model: str) -> ModelDescriptor | None:
    """The descriptor behind a client-facing name: a model id or its INT8 variant's ensemble."""
    if model in REGISTRY:
        return REGISTRY[model]
    for desc in REGISTRY.values():
        if model == getattr(desc, "int8_ensemble", None):
            return desc
    return None


def _version(version: int | str | None) -> str:
    return "" if version is None else str(version)


def _raw_name(model: str) -> str:
    """Network model behind a client-facing id (a name that is not an id is taken as a Triton model name)."""
    desc = _descriptor(model)
    if desc is None:
        return model
    return desc.net_model if model == desc.id else desc.int8_model


def _draining(err: "ModelNotFound", ready: "bool | Callable[[], bool]") -> StylizeError:
    """NOT_FOUND from a server that is not ready is a drain, not a missing model: while tritonserver stops, it
    unloads the models first and answers NOT_FOUND for seconds. Retried like UNAVAILABLE (the next try reaches
    another pod, or the restarted server); from a ready server it stays ModelNotFound."""
    if (ready() if callable(ready) else ready):
        return err
    return ServerUnavailable(f"{err.message} (the server is not ready: draining or starting)", model=err.model,
                             status=err.status, url=err.url)


def _raw_candidates(model: str) -> tuple[str, ...]:
    """The network models that can serve ``model``'s raw frames, in order: a CPU pod loads ``<id>_net``, a GPU pod
    ``<id>_trt`` only (k8s/overlays/gpu). The client takes the first one the server says is ready (an open API)."""
    desc = _descriptor(model)
    if desc is None or model != desc.id:
        return (_raw_name(model),)
    return (desc.net_model, desc.trt_model)


_CPU_PLATFORMS = ("onnxruntime_onnx", "openvino")  # what Triton's metadata says for the CPU network backends


def _raw_model_from_metadata(model: str, metadata: dict) -> RawModel:
    """From the model metadata (an open API: the model config is an admin API, stylize.contract.access) and the descriptor.

    Shapes carry the batch axis (-1) when the model batches; the window is the frame axis of a 5-d input (the
    build may change it: with_window). The batch limit comes from the descriptor (the build writes it into the
    config from there); a network unknown to the descriptors gets one item per request. ONNX networks run on CPU
    instances here (one request per execution: tiles go one per call, see tiling); a TensorRT plan takes tile_batch.
    """
    from stylize.contract.tiling import CPU_TILES_PER_CALL

    desc = _descriptor(model)
    inp, out = metadata["inputs"][0], metadata["outputs"][0]
    shape = [int(d) for d in inp.get("shape", [])]
    batching = len(shape) in (4, 5) and shape[0] == -1
    dims = shape[1:] if batching else shape
    window = dims[0] if len(dims) == 4 else None  # [T, H, W, 3]
    return RawModel(
        name=metadata["name"],
        input=desc.net_input.name if desc else inp["name"],
        output=desc.net_output.name if desc else out["name"],
        max_batch_size=(desc.max_batch_size if desc else 1) if batching else 0,
        window=window,
        size_multiple=desc.size_multiple if desc else 1,
        min_size=desc.min_size if desc else 1,
        scale=desc.scale if desc else 1,
        tile_size=desc.tile_size if desc and not desc.window else None,
        tile_overlap=desc.tile_overlap if desc else 16,
        tile_batch=desc.tile_batch if desc else 1,
        tiles_per_call=CPU_TILES_PER_CALL if metadata.get("platform") in _CPU_PLATFORMS else None,
        max_side=desc.gpu_max_side if desc and metadata.get("platform") == "tensorrt_plan" else None,
    )


def _known_models() -> list[str]:
    """Every Triton model name the descriptors define (for listing and health without the admin key)."""
    names: list[str] = []
    for d in REGISTRY.values():
        names += [*d.triton_models, d.trt_model, d.int8_model, d.int8_ensemble]
        names += [] if d.window else [d.int8_image_model]
    return list(dict.fromkeys(names))


def _client_facing(name: str) -> bool:
    desc = _descriptor(name)
    return desc is not None and name in (desc.id, desc.int8_ensemble)


def _infos_from_metadata(metadata: dict[str, dict], ready: dict[str, bool]) -> list[ModelInfo]:
    """ModelInfo of the client-facing models found through the open APIs: no weights status (it is in the model
    config, an admin API): ``weights`` is "?"."""
    infos = []
    for name in sorted(n for n in metadata if _client_facing(n)):
        desc = _descriptor(name)
        raw = metadata.get(_raw_name(name), {})
        infos.append(ModelInfo(
            id=name, task=desc.task, scale=desc.scale, weights="?", license=desc.weights.license,
            versions=tuple(sorted(int(v) for v in raw.get("versions", ()))), ready=ready.get(name, False),
            title=desc.title + (" (INT8)" if name != desc.id else "")))
    return infos


def _tile_for(raw: RawModel, tile: int | None) -> int | None:
    """The tile size to use: the model's unless given; 0 means never tile."""
    if raw.window:
        return None
    size = raw.tile_size if tile is None else tile
    if not size:
        return None
    size -= size % raw.size_multiple
    if size <= 2 * raw.tile_overlap:
        raise InvalidInput(f"tile {tile} must be more than twice the overlap ({raw.tile_overlap})")
    return size


def _run_frames(frames: np.ndarray, raw: RawModel, tile: int | None,
                run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Validate, pad, batch (or tile), run, crop: the raw-frame path shared by both clients."""
    arr, added = _frames_batch(frames, raw)
    h, w = arr.shape[-3:-1]
    padded = pad_to_multiple(arr, raw.size_multiple, raw.min_size)
    ph, pw = padded.shape[-3:-1]
    if tile and (ph > tile or pw > tile):
        from stylize.contract.tiling import run_tiled

        out = np.stack([run_tiled(f, run=run, scale=raw.scale, tile=tile, overlap=raw.tile_overlap,
                                  batch=max(1, min(raw.tile_batch, raw.max_batch_size or 1)),
                                  per_call=raw.tiles_per_call, multiple=raw.size_multiple,
                                  max_side=raw.max_side)[0] for f in padded])
    else:
        step = max(raw.max_batch_size, 1)
        outs = [run(np.ascontiguousarray(padded[i:i + step])) for i in range(0, len(padded), step)]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
    out = crop_frames(out, h, w, ph, pw)
    return out[0] if added else out


def _check_image_model(model: str) -> None:
    desc = _descriptor(model)
    if desc is not None and desc.is_video_window:
        raise InvalidInput(f"{model} is a video model (frame windows): use upscale_video() or infer_frames()",
                           model=model)


def _net_version(model: str, version: int | str | None) -> int | None:
    """The network version a pinned image call asks for with NET_VERSION (None: not pinned, or a model the
    descriptors do not know, whose own version is pinned instead). Refused here unless a positive integer."""
    desc = _descriptor(model)
    if version is None or version == "" or desc is None or desc.window:
        return None
    try:
        v = int(str(version).strip())
    except ValueError:
        raise InvalidInput(f"model version {version!r}: expected a version number (see `stylize models`)",
                           model=model) from None
    if v < 1:
        raise InvalidInput(f"model version {v}: versions are numbered from 1", model=model)
    return v


def _image_request(grpc, model: str, data: bytes, options: dict[str, Any],
                   version: int | str | None = None) -> tuple[list, list, str]:
    """Inputs, requested outputs and the model version of one image request (shared by the blocking and the asyncio
    client). A client-facing ensemble has one version; a pinned ``version`` is the network's, sent as NET_VERSION
    (the image step runs that version: stylize.engine.network.NetworkVersions). A model the descriptors do not
    know gets ``version`` as its own Triton version."""
    _check_image_model(model)
    values = build_options(options, model)
    net_version = _net_version(model, version)
    if not data:
        raise InvalidInput("empty input: no image bytes", model=model)
    image = grpc.InferInput(ENCODED_IMAGE.name, [1, *ENCODED_IMAGE.dims], ENCODED_IMAGE.dtype)
    image.set_data_from_numpy(np.array([[bytes(data)]], dtype=np.object_))
    inputs = [image]
    tensors = option_tensors(values)
    if net_version is not None:
        tensors.append((NET_VERSION.tensor.name, NET_VERSION.tensor.dtype,
                        np.array([[net_version]], dtype=NET_VERSION.tensor.numpy_dtype)))
    for name, dtype, arr in tensors:
        t = grpc.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        inputs.append(t)
    model_version = "" if net_version is not None else _version(version)
    return inputs, [grpc.InferRequestedOutput(ENCODED_RESULT.name)], model_version


def _frames_batch(frames: np.ndarray, raw: RawModel) -> tuple[np.ndarray, bool]:
    """Validate frames for a network; returns (batched array, whether a batch axis was added)."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise InvalidInput(f"frames dtype is {arr.dtype}; expected uint8")
    per_item = 4 if raw.window else 3
    if arr.ndim == per_item:
        arr, added = arr[np.newaxis], True
    elif arr.ndim == per_item + 1:
        added = False
    else:
        want = "TxHxWx3 (or NxTxHxWx3)" if raw.window else "HxWx3 (or NxHxWx3)"
        raise InvalidInput(f"frames shape {arr.shape}; {raw.name} expects {want}")
    if arr.shape[-1] != 3:
        raise InvalidInput(f"frames shape {arr.shape}; expected 3 channels (RGB)")
    if raw.window and arr.shape[1] != raw.window:
        raise InvalidInput(f"{raw.name} takes windows of {raw.window} frames, got {arr.shape[1]}")
    if raw.window and raw.max_side and max(arr.shape[-3:-1]) > raw.max_side:
        raise InvalidInput(f"{raw.name} takes frames of at most {raw.max_side} pixels a side (its TensorRT profile; "
                           f"windows are not tiled in space), got {arr.shape[-2]}x{arr.shape[-3]}")
    return arr, added


class _Observers:
    def __init__(self, observers: list):
        self._observers = observers

    def request(self, model: str, seconds: float, error: StylizeError | None) -> None:
        for o in self._observers:
            o.observe_request(model, seconds, error)

    def retry(self, model: str, error: StylizeError, delay: float) -> None:
        for o in self._observers:
            o.observe_retry(model, error, delay)


def _triton_errors() -> tuple[type[BaseException], ...]:
    import grpc
    from tritonclient.utils import InferenceServerException

    return (InferenceServerException, grpc.RpcError)


# ---------------------------------------------------------------------------------------------------------------
# Synchronous client
# ---------------------------------------------------------------------------------------------------------------


class StylizeClient:
    """Blocking client; thread-safe (one gRPC channel, any number of threads may call it).

    ``version`` pins the network's version for every call (None: the newest one served): the version of
    ``<id>_net``, which keeps the newest two builds servable. Raw frames and video call that version of the network;
    image calls go to the client-facing ensemble with the version as its NET_VERSION input, and its image step runs
    that version (a version the server does not serve is refused with INVALID_ARGUMENT naming the served ones).
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        model: str = DEFAULT_MODEL,
        version: int | str | None = None,
        timeout: float | None = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        compression: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        ssl: bool = False,
        metrics: "ClientMetrics | None" = None,
        admin_key: str | None = None,
    ):
        import tritonclient.grpc as grpcclient

        if compression not in (None, "gzip", "deflate"):
            raise ValueError(f"compression {compression!r}; expected None, 'gzip' or 'deflate'")
        self.url = url or default_url()
        self.model = model
        self.version = version
        self.timeout = timeout
        self.retry = retry
        self.compression = compression
        self.stats = ClientStats()
        self._observers = _Observers([self.stats] + ([metrics] if metrics is not None else []))
        self._grpc = grpcclient
        self._errors = _triton_errors()
        # admin APIs (stylize.contract.access): listing and health read the repository index and configs with the key
        self._admin = access.grpc_headers(admin_key if admin_key is not None else default_admin_key())
        self._client = grpcclient.InferenceServerClient(self.url, ssl=ssl,
                                                        channel_args=_channel_args(max_message_bytes))
        self._raw: dict[tuple[str, str], RawModel] = {}
        self._closed = threading.Event()

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the channel: calls in flight end at once and retry waits stop (Ctrl-C in the CLI stays snappy)."""
        self._closed.set()
        self._client.close()

    def __enter__(self) -> "StylizeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StylizeClient(url={self.url!r}, model={self.model!r}, version={self.version!r})"

    # ---- transport ----------------------------------------------------------------------------------------------
    def _call(self, model: str, op: Callable[[], Any], *, retry: bool = True) -> Any:
        policy = self.retry if retry else NO_RETRY
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            t0 = time.monotonic()
            if self._closed.is_set():
                raise StylizeError("the client is closed", model=model, url=self.url)
            try:
                result = op()
            except ValueError:  # grpc's "Cannot invoke RPC on closed channel!"
                if self._closed.is_set():
                    raise StylizeError("the client is closed", model=model, url=self.url) from None
                raise
            except self._errors as e:
                err = from_triton(e, model=model, url=self.url)
                if isinstance(err, ModelNotFound) and retry:
                    err = _draining(err, self._server_ready)
                self._observers.request(model, time.monotonic() - t0, err)
                elapsed = time.monotonic() - start
                if policy.should_retry(err, attempt, elapsed):
                    delay = policy.backoff(attempt, remaining=None if policy.deadline is None
                                           else policy.deadline - elapsed)
                    self._observers.retry(model, err, delay)
                    if self._closed.wait(delay):
                        raise err from None
                    continue
                raise err from None
            self._observers.request(model, time.monotonic() - t0, None)
            return result

    # ---- images -------------------------------------------------------------------------------------------------
    def infer(self, img: ImageLike, model: str | None = None, *, version: int | str | None = None,
              **options: Any) -> Any:
        """Run one image through a model; returns the same kind it was given (see the module docstring)."""
        data, kind = encode_input(img)
        like = img if kind == "array" else None
        return decode_output(self.infer_bytes(data, model, version=version, **options), kind, like=like)

    def infer_bytes(self, data: bytes, model: str | None = None, *, version: int | str | None = None,
                    **options: Any) -> bytes:
        """Encoded image in, encoded result out (PNG unless output_format says otherwise and the server supports it)."""
        model = model or self.model
        inputs, outputs, v = _image_request(self._grpc, model, data, options,
                                            version if version is not None else self.version)
        result = self._call(model, lambda: self._client.infer(
            model, inputs, model_version=v, outputs=outputs, client_timeout=self.timeout,
            compression_algorithm=self.compression))
        return bytes(result.as_numpy(ENCODED_RESULT.name).reshape(-1)[0])

    def infer_file(self, src: str | os.PathLike, dst: str | os.PathLike, model: str | None = None, *,
                   version: int | str | None = None, **options: Any) -> Path:
        """Read ``src``, write the result to ``dst`` atomically (never a half-written file); returns ``dst``."""
        src, dst = Path(src), Path(dst)
        if dst.exists() and dst.resolve() == src.resolve():
            raise InvalidInput(f"refusing to overwrite the input {src}")
        data, _ = encode_input(src)
        write_atomic(dst, self.infer_bytes(data, model, version=version, **options))
        return dst

    def infer_many(self, items: Iterable[ImageLike], model: str | None = None, *, concurrency: int = 4,
                   return_exceptions: bool = False, version: int | str | None = None,
                   **options: Any) -> Iterator[Any]:
        """Yield the results of ``items`` in order, ``concurrency`` requests in flight.

        Memory stays bounded: at most ``concurrency`` inputs and results are held, whatever the length of
        ``items`` (which may be a lazy generator). With ``return_exceptions`` a failed item yields its StylizeError
        instead of stopping the iteration.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        build_options(options, model or self.model)  # fail before the first request on a bad option
        _net_version(model or self.model, version if version is not None else self.version)
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="stylize-infer")
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(self.infer, item, model, version=version, **options))
                if len(pending) >= concurrency:
                    yield _resolve(pending.popleft(), return_exceptions)
            while pending:
                yield _resolve(pending.popleft(), return_exceptions)
        finally:
            # not waiting: a consumer that stops early (or Ctrl-C) must not sit behind requests in flight
            pool.shutdown(wait=False, cancel_futures=True)

    # ---- raw frames ---------------------------------------------------------------------------------------------
    def raw_model(self, model: str | None = None, *, version: int | str | None = None) -> RawModel:
        """Tensor names, batch limit, window and size rules of the network behind ``model`` (cached)."""
        model = model or self.model
        v = _version(version if version is not None else self.version)
        key = (model, v)
        if key not in self._raw:
            candidates = _raw_candidates(model)
            name = next((c for c in candidates[:-1] if self._call(c, lambda c=c: self._client.is_model_ready(
                c, model_version=v, client_timeout=self.timeout))), candidates[-1])
            metadata = self._call(name, lambda: self._client.get_model_metadata(
                name, model_version=v, as_json=True, client_timeout=self.timeout))
            self._raw[key] = _raw_model_from_metadata(model, metadata)
        return self._raw[key]

    def infer_frames(self, frames: np.ndarray, model: str | None = None, *, version: int | str | None = None,
                     tile: int | None = None) -> np.ndarray:
        """uint8 RGB frames through the network directly (no PNG round trip): the path video uses.

        ``frames``: HxWx3 or NxHxWx3 (a window TxHxWx3 or NxTxHxWx3 for windowed models); returns the same layout
        with sides multiplied by the model's scale. Sides are padded to the network's size rules and cropped back.
        Batches larger than the model's max_batch_size are split. Frames larger than the model's tile size (``tile``
        overrides it, 0 disables) go through in overlapping tiles blended exactly as the image ensembles do, so a
        1080p frame never asks the server for more memory than an image request does.
        """
        model = model or self.model
        raw = self.raw_model(model, version=version)
        v = _version(version if version is not None else self.version)
        return _run_frames(frames, raw, _tile_for(raw, tile), lambda batch: self._infer_raw(raw, batch, v))

    def _infer_raw(self, raw: RawModel, batch: np.ndarray, version: str) -> np.ndarray:
        inp = self._grpc.InferInput(raw.input, list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        outputs = [self._grpc.InferRequestedOutput(raw.output)]
        result = self._call(raw.name, lambda: self._client.infer(
            raw.name, [inp], model_version=version, outputs=outputs, client_timeout=self.timeout,
            compression_algorithm=self.compression))
        return result.as_numpy(raw.output)

    # ---- video --------------------------------------------------------------------------------------------------
    def upscale_video(self, src: str | os.PathLike, dst: str | os.PathLike, model: str | None = None,
                      **kwargs: Any) -> "VideoReport":
        """Upscale (or stylize) a video, keeping audio, fps and frame count; see stylize.sdk.video.upscale_video."""
        from stylize.sdk.video import upscale_video

        return upscale_video(self, src, dst, model=model or "animevideo_x2", **kwargs)

    # ---- listing and health -------------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        """Client-facing models with task, scale, ready versions and weights status (read from the server).

        The weights status is in the model configs, an admin API: without the admin key (``admin_key=`` or
        STYLIZE_ADMIN_KEY) the models are found through the open metadata API and ``weights`` is "?"."""
        if not self._admin:
            metadata, ready = self._open_metadata(self.timeout)
            return _infos_from_metadata(metadata, ready)
        index = self._call("", lambda: self._client.get_model_repository_index(
            as_json=True, client_timeout=self.timeout, headers=self._admin)).get("models", [])
        configs = {}
        for name in sorted({e["name"] for e in index if e.get("state") == "READY"}):
            try:
                configs[name] = self._call(name, lambda: self._client.get_model_config(
                    name, as_json=True, client_timeout=self.timeout, headers=self._admin))["config"]
            except StylizeError:
                continue  # unloaded between the two calls
        return _model_infos(index, configs)

    def _open_metadata(self, timeout: float | None) -> tuple[dict[str, dict], dict[str, bool]]:
        """Metadata and readiness of the descriptors' models this server has (open APIs only)."""
        metadata, ready = {}, {}
        for name in _known_models():
            try:
                metadata[name] = self._client.get_model_metadata(name, as_json=True, client_timeout=timeout)
                ready[name] = bool(self._client.is_model_ready(name, client_timeout=timeout))
            except self._errors as e:
                if not isinstance(from_triton(e), ModelNotFound):
                    raise
        return metadata, ready

    def _server_ready(self) -> bool:
        """Whether the server says it is ready (False when it cannot be asked): tells a drain from a missing model."""
        try:
            return bool(self._client.is_server_ready(client_timeout=min(self.timeout or 5.0, 5.0)))
        except self._errors:
            return False

    def health(self, *, timeout: float = 5.0) -> Health:
        """Liveness, readiness, server version and model states. Never raises for an unreachable server.

        Model states come from the repository index with the admin key; without it, from the open metadata and
        readiness APIs, for the models the descriptors define (READY or UNAVAILABLE per version)."""
        t0 = time.monotonic()
        try:
            live = self._client.is_server_live(client_timeout=timeout)
            ready = self._client.is_server_ready(client_timeout=timeout)
            meta = self._client.get_server_metadata(as_json=True, client_timeout=timeout)
            if self._admin:
                index = self._client.get_model_repository_index(
                    as_json=True, client_timeout=timeout, headers=self._admin).get("models", [])
            else:
                metadata, _ = self._open_metadata(timeout)
                index = [{"name": n, "version": v, "state": "READY" if self._client.is_model_ready(
                    n, v, client_timeout=timeout) else "UNAVAILABLE"} for n, m in metadata.items()
                    for v in m.get("versions", [])]
        except self._errors as e:
            err = from_triton(e, url=self.url)
            return Health(self.url, False, False, None, {}, time.monotonic() - t0, str(err))
        states = {f"{m['name']}/{m.get('version', '')}": m.get("state", "") for m in index}
        return Health(self.url, bool(live), bool(ready), meta.get("version"), states, time.monotonic() - t0)


def _resolve(future: Future, return_exceptions: bool) -> Any:
    try:
        return future.result()
    except StylizeError as e:
        if return_exceptions:
            return e
        raise


# ---------------------------------------------------------------------------------------------------------------
# Asynchronous client (gRPC asyncio), same surface
# ---------------------------------------------------------------------------------------------------------------


class AsyncStylizeClient:
    """The same surface on gRPC asyncio: ``await client.infer(img)``, ``async for r in client.infer_many(...)``.

    The channel is created on first use, inside the running event loop. ``upscale_video`` runs the threaded video
    pipeline of the blocking client in a worker thread (decoding and encoding are blocking work anyway).
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        model: str = DEFAULT_MODEL,
        version: int | str | None = None,
        timeout: float | None = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        compression: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        ssl: bool = False,
        metrics: "ClientMetrics | None" = None,
        admin_key: str | None = None,
    ):
        import tritonclient.grpc as grpcclient

        if compression not in (None, "gzip", "deflate"):
            raise ValueError(f"compression {compression!r}; expected None, 'gzip' or 'deflate'")
        self.url = url or default_url()
        self.model = model
        self.version = version
        self.timeout = timeout
        self.retry = retry
        self.compression = compression
        self.stats = ClientStats()
        self._metrics = metrics
        self._admin = access.grpc_headers(admin_key if admin_key is not None else default_admin_key())
        self._observers = _Observers([self.stats] + ([metrics] if metrics is not None else []))
        self._grpc = grpcclient  # InferInput & co. are shared with the asyncio client
        self._errors = _triton_errors()
        self._ssl = ssl
        self._max_message_bytes = max_message_bytes
        self._client = None
        self._raw: dict[tuple[str, str], RawModel] = {}

    def _aio(self):
        if self._client is None:
            import tritonclient.grpc.aio as aio

            self._client = aio.InferenceServerClient(self.url, ssl=self._ssl,
                                                     channel_args=_channel_args(self._max_message_bytes))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> "AsyncStylizeClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncStylizeClient(url={self.url!r}, model={self.model!r}, version={self.version!r})"

    async def _call(self, model: str, op: Callable[[], Any], *, retry: bool = True) -> Any:
        policy = self.retry if retry else NO_RETRY
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            t0 = time.monotonic()
            try:
                result = await op()
            except self._errors as e:
                err = from_triton(e, model=model, url=self.url)
                if isinstance(err, ModelNotFound) and retry:
                    err = _draining(err, await self._server_ready())
                self._observers.request(model, time.monotonic() - t0, err)
                elapsed = time.monotonic() - start
                if policy.should_retry(err, attempt, elapsed):
                    delay = policy.backoff(attempt, remaining=None if policy.deadline is None
                                           else policy.deadline - elapsed)
                    self._observers.retry(model, err, delay)
                    await asyncio.sleep(delay)
                    continue
                raise err from None
            self._observers.request(model, time.monotonic() - t0, None)
            return result

    async def infer(self, img: ImageLike, model: str | None = None, *, version: int | str | None = None,
                    **options: Any) -> Any:
        data, kind = encode_input(img)
        like = img if kind == "array" else None
        return decode_output(await self.infer_bytes(data, model, version=version, **options), kind, like=like)

    async def infer_bytes(self, data: bytes, model: str | None = None, *, version: int | str | None = None,
                          **options: Any) -> bytes:
        model = model or self.model
        inputs, outputs, v = _image_request(self._grpc, model, data, options,
                                            version if version is not None else self.version)
        client = self._aio()
        result = await self._call(model, lambda: client.infer(
            model, inputs, model_version=v, outputs=outputs, client_timeout=self.timeout,
            compression_algorithm=self.compression))
        return bytes(result.as_numpy(ENCODED_RESULT.name).reshape(-1)[0])

    async def infer_file(self, src: str | os.PathLike, dst: str | os.PathLike, model: str | None = None, *,
                         version: int | str | None = None, **options: Any) -> Path:
        src, dst = Path(src), Path(dst)
        if dst.exists() and dst.resolve() == src.resolve():
            raise InvalidInput(f"refusing to overwrite the input {src}")
        data, _ = encode_input(src)
        result = await self.infer_bytes(data, model, version=version, **options)
        await asyncio.to_thread(write_atomic, dst, result)
        return dst

    async def infer_many(self, items: Iterable[ImageLike] | AsyncIterable[ImageLike], model: str | None = None, *,
                         concurrency: int = 4, return_exceptions: bool = False, version: int | str | None = None,
                         **options: Any) -> AsyncIterator[Any]:
        """Results in order, ``concurrency`` requests in flight, bounded memory (see StylizeClient.infer_many)."""
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        build_options(options, model or self.model)
        _net_version(model or self.model, version if version is not None else self.version)
        pending: deque[asyncio.Task] = deque()

        async def resolve(task: asyncio.Task) -> Any:
            try:
                return await task
            except StylizeError as e:
                if return_exceptions:
                    return e
                raise

        try:
            async for item in _aiter(items):
                pending.append(asyncio.ensure_future(self.infer(item, model, version=version, **options)))
                if len(pending) >= concurrency:
                    yield await resolve(pending.popleft())
            while pending:
                yield await resolve(pending.popleft())
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def raw_model(self, model: str | None = None, *, version: int | str | None = None) -> RawModel:
        model = model or self.model
        v = _version(version if version is not None else self.version)
        key = (model, v)
        if key not in self._raw:
            client = self._aio()
            candidates = _raw_candidates(model)
            name = candidates[-1]
            for c in candidates[:-1]:
                if await self._call(c, lambda c=c: client.is_model_ready(c, model_version=v,
                                                                         client_timeout=self.timeout)):
                    name = c
                    break
            metadata = await self._call(name, lambda: client.get_model_metadata(
                name, model_version=v, as_json=True, client_timeout=self.timeout))
            self._raw[key] = _raw_model_from_metadata(model, metadata)
        return self._raw[key]

    async def infer_frames(self, frames: np.ndarray, model: str | None = None, *, version: int | str | None = None,
                           tile: int | None = None) -> np.ndarray:
        model = model or self.model
        raw = await self.raw_model(model, version=version)
        v = _version(version if version is not None else self.version)
        client = self._aio()
        loop = asyncio.get_running_loop()

        async def infer(batch: np.ndarray) -> np.ndarray:
            inp = self._grpc.InferInput(raw.input, list(batch.shape), "UINT8")
            inp.set_data_from_numpy(batch)
            outputs = [self._grpc.InferRequestedOutput(raw.output)]
            result = await self._call(raw.name, lambda: client.infer(
                raw.name, [inp], model_version=v, outputs=outputs, client_timeout=self.timeout,
                compression_algorithm=self.compression))
            return result.as_numpy(raw.output)

        # the tiling/blending code is synchronous: it runs in a worker thread and awaits each batch on this loop
        def run(batch: np.ndarray) -> np.ndarray:
            return asyncio.run_coroutine_threadsafe(infer(batch), loop).result()

        return await asyncio.to_thread(_run_frames, frames, raw, _tile_for(raw, tile), run)

    async def models(self) -> list[ModelInfo]:
        client = self._aio()
        if not self._admin:  # the open APIs only (see StylizeClient.models)
            metadata, ready = await self._open_metadata(self.timeout)
            return _infos_from_metadata(metadata, ready)
        index = (await self._call("", lambda: client.get_model_repository_index(
            as_json=True, client_timeout=self.timeout, headers=self._admin))).get("models", [])
        configs = {}
        for name in sorted({e["name"] for e in index if e.get("state") == "READY"}):
            try:
                configs[name] = (await self._call(name, lambda: client.get_model_config(
                    name, as_json=True, client_timeout=self.timeout, headers=self._admin)))["config"]
            except StylizeError:
                continue
        return _model_infos(index, configs)

    async def _open_metadata(self, timeout: float | None) -> tuple[dict[str, dict], dict[str, bool]]:
        client = self._aio()
        metadata, ready = {}, {}
        for name in _known_models():
            try:
                metadata[name] = await client.get_model_metadata(name, as_json=True, client_timeout=timeout)
                ready[name] = bool(await client.is_model_ready(name, client_timeout=timeout))
            except self._errors as e:
                if not isinstance(from_triton(e), ModelNotFound):
                    raise
        return metadata, ready

    async def _server_ready(self) -> bool:
        try:
            return bool(await self._aio().is_server_ready(client_timeout=min(self.timeout or 5.0, 5.0)))
        except self._errors:
            return False

    async def health(self, *, timeout: float = 5.0) -> Health:
        t0 = time.monotonic()
        client = self._aio()
        try:
            live = await client.is_server_live(client_timeout=timeout)
            ready = await client.is_server_ready(client_timeout=timeout)
            meta = await client.get_server_metadata(as_json=True, client_timeout=timeout)
            if self._admin:
                index = (await client.get_model_repository_index(
                    as_json=True, client_timeout=timeout, headers=self._admin)).get("models", [])
            else:
                metadata, _ = await self._open_metadata(timeout)
                index = [{"name": n, "version": v, "state": "READY" if await client.is_model_ready(
                    n, v, client_timeout=timeout) else "UNAVAILABLE"} for n, m in metadata.items()
                    for v in m.get("versions", [])]
        except self._errors as e:
            err = from_triton(e, url=self.url)
            return Health(self.url, False, False, None, {}, time.monotonic() - t0, str(err))
        states = {f"{m['name']}/{m.get('version', '')}": m.get("state", "") for m in index}
        return Health(self.url, bool(live), bool(ready), meta.get("version"), states, time.monotonic() - t0)

    async def upscale_video(self, src: str | os.PathLike, dst: str | os.PathLike, model: str | None = None,
                            **kwargs: Any) -> "VideoReport":
        def run() -> "VideoReport":
            with StylizeClient(url=self.url, model=self.model, version=self.version, timeout=self.timeout,
                               retry=self.retry, compression=self.compression,
                               max_message_bytes=self._max_message_bytes, ssl=self._ssl,
                               metrics=self._metrics) as client:
                return client.upscale_video(src, dst, model, **kwargs)

        return await asyncio.to_thread(run)


async def _aiter(items: Iterable | AsyncIterable) -> AsyncIterator:
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


__all__ = [
    "StylizeClient", "AsyncStylizeClient", "RetryPolicy", "NO_RETRY", "ClientStats", "ModelInfo", "Health",
    "RawModel", "OPTIONS", "MAX_MESSAGE_BYTES", "kind_of", "encode_input", "decode_output",
    "build_options", "option_tensors", "image_format", "write_atomic",
]
