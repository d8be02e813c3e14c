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

System shared memory is deliberately not used: it saved under 1 % of a real network's time on loopback, and would
add a region lifecycle and work only on the server's host (docs/decisions.md#no-shared-memory).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterable, Iterator, TypeGuard, TypeVar

import numpy as np

from stylize.contract import access
from stylize.contract.descriptors import DEFAULT_IMAGE_MODEL, DEFAULT_VIDEO_MODEL, ENCODED_RESULT
from stylize.contract.errors import InvalidInput, ModelNotFound, StylizeError, from_triton
from stylize.contract.fileio import write_atomic  # outputs: atomic, with the umask's mode like any open()
from stylize.contract.frames import RawModel
from stylize.sdk.connection import default_admin_key, default_url
from stylize.sdk.info import (
    Health,
    ModelInfo,
    infos_from_metadata,
    known_models,
    model_infos,
    raw_candidates,
    raw_model_from_metadata,
    version_arg,
)
from stylize.sdk.request import (
    OPTIONS,
    ImageLike,
    build_options,
    decode_output,
    encode_input,
    image_format,
    image_request,
    kind_of,
    net_version,
    option_tensors,
    run_frames,
    tile_for,
)
from stylize.sdk.transport import (
    MAX_MESSAGE_BYTES,
    NO_RETRY,
    ClientStats,
    Observers,
    RetryPolicy,
    channel_args,
    draining,
    triton_errors,
)

if TYPE_CHECKING:
    from stylize.sdk.metrics import ClientMetrics
    from stylize.sdk.video import VideoReport

DEFAULT_MODEL = DEFAULT_IMAGE_MODEL  # what a client calls when no model is named
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------------------
# The operations, written once: each is a generator that yields the calls it makes to tritonclient (the same method
# names on tritonclient.grpc and tritonclient.grpc.aio) and receives their results. StylizeClient runs them blocking,
# AsyncStylizeClient (stylize.sdk.aio) awaits them: only the await differs.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One call of tritonclient's InferenceServerClient. ``model``: the call goes through the retry loop and its
    errors become stylize.contract.errors (None: a bare call, whose tritonclient errors the operation sees)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    retry: bool = True


Op = Generator[Rpc, Any, T]


class Attempts:
    """The retry loop of one call without its waits: what to do with each failed attempt (the caller sleeps)."""

    def __init__(self, core: "ClientCore", model: str, retry: bool):
        self.core, self.model, self.retry = core, model, retry
        self.policy = core.retry if retry else NO_RETRY
        self.start = time.monotonic()
        self.attempt = 0
        self.t0 = self.start

    def begin(self) -> None:
        """Before each attempt: refuses a closed client."""
        if self.core._closed.is_set():
            raise StylizeError("the client is closed", model=self.model, url=self.core.url)
        self.attempt += 1
        self.t0 = time.monotonic()

    def closed_channel(self) -> StylizeError | None:
        """grpc's "Cannot invoke RPC on closed channel!": the client was closed while the call was made."""
        if self.core._closed.is_set():
            return StylizeError("the client is closed", model=self.model, url=self.core.url)
        return None

    def error(self, e: BaseException) -> StylizeError:
        return from_triton(e, model=self.model, url=self.core.url)

    def needs_server_state(self, err: StylizeError) -> TypeGuard[ModelNotFound]:
        """A NOT_FOUND may be a draining server (retryable) or a missing model: the server's readiness tells."""
        return isinstance(err, ModelNotFound) and self.retry

    def failed(self, err: StylizeError) -> float | None:
        """Report the failed attempt; the backoff before the next one, or None: raise ``err``."""
        core = self.core
        core._observers.request(self.model, time.monotonic() - self.t0, err)
        elapsed = time.monotonic() - self.start
        if not self.policy.should_retry(err, self.attempt, elapsed):
            return None
        delay = self.policy.backoff(
            self.attempt, remaining=None if self.policy.deadline is None else self.policy.deadline - elapsed
        )
        core._observers.retry(self.model, err, delay)
        return delay

    def succeeded(self) -> None:
        self.core._observers.request(self.model, time.monotonic() - self.t0, None)


class ClientCore:
    """Settings, statistics, the admin key and the operations both clients share (see the module docstring)."""

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
        self._observers = Observers([self.stats] + ([metrics] if metrics is not None else []))
        self._grpc = grpcclient  # InferInput & co. serve the asyncio client too
        self._errors = triton_errors()
        self._ssl = ssl
        self._max_message_bytes = max_message_bytes
        self._channel_args = channel_args(max_message_bytes)
        # admin APIs (stylize.contract.access): listing and health read the repository index and configs with the key
        self._admin = access.grpc_headers(admin_key if admin_key is not None else default_admin_key())
        self._raw: dict[tuple[str, str], RawModel] = {}
        self._closed = threading.Event()
        self._client: Any = self._connect()  # tritonclient's InferenceServerClient (untyped)

    def _connect(self) -> Any:
        """The channel, made by each client its own way (the asyncio one inside its event loop, on first use)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, model={self.model!r}, version={self.version!r})"

    def _pinned(self, version: int | str | None) -> int | str | None:
        return version if version is not None else self.version

    # ---- operations --------------------------------------------------------------------------------------------
    def _infer_bytes_op(
        self, data: bytes, model: str | None, version: int | str | None, options: dict[str, Any]
    ) -> Op[bytes]:
        model = model or self.model
        inputs, outputs, v = image_request(self._grpc, model, data, options, self._pinned(version))
        result = yield Rpc(
            "infer",
            (model, inputs),
            dict(model_version=v, outputs=outputs, client_timeout=self.timeout, compression_algorithm=self.compression),
            model,
        )
        return bytes(result.as_numpy(ENCODED_RESULT.name).reshape(-1)[0])

    def _raw_model_op(self, model: str | None, version: int | str | None) -> Op[RawModel]:
        model = model or self.model
        v = version_arg(self._pinned(version))
        key = (model, v)
        if key not in self._raw:
            candidates = raw_candidates(model)
            name = candidates[-1]
            for c in candidates[:-1]:
                if (yield Rpc("is_model_ready", (c,), dict(model_version=v, client_timeout=self.timeout), c)):
                    name = c
                    break
            metadata = yield Rpc(
                "get_model_metadata", (name,), dict(model_version=v, as_json=True, client_timeout=self.timeout), name
            )
            self._raw[key] = raw_model_from_metadata(model, metadata)
        return self._raw[key]

    def _infer_raw_op(self, raw: RawModel, batch: np.ndarray, version: str) -> Op[np.ndarray]:
        inp = self._grpc.InferInput(raw.input, list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        outputs = [self._grpc.InferRequestedOutput(raw.output)]
        result = yield Rpc(
            "infer",
            (raw.name, [inp]),
            dict(
                model_version=version,
                outputs=outputs,
                client_timeout=self.timeout,
                compression_algorithm=self.compression,
            ),
            raw.name,
        )
        out: np.ndarray = result.as_numpy(raw.output)  # tritonclient's InferResult is untyped
        return out

    def _models_op(self) -> Op[list[ModelInfo]]:
        if not self._admin:  # the open APIs only: weights "?" (see StylizeClient.models)
            metadata, ready = yield from self._open_metadata_op(self.timeout)
            return infos_from_metadata(metadata, ready)
        index = (
            yield Rpc(
                "get_model_repository_index",
                (),
                dict(as_json=True, client_timeout=self.timeout, headers=self._admin),
                "",
            )
        ).get("models", [])
        configs = {}
        for name in sorted({e["name"] for e in index if e.get("state") == "READY"}):
            try:
                configs[name] = (
                    yield Rpc(
                        "get_model_config",
                        (name,),
                        dict(as_json=True, client_timeout=self.timeout, headers=self._admin),
                        name,
                    )
                )["config"]
            except StylizeError:
                continue  # unloaded between the two calls
        return model_infos(index, configs)

    def _open_metadata_op(self, timeout: float | None) -> Op[tuple[dict[str, dict], dict[str, bool]]]:
        """Metadata and readiness of the descriptors' models this server has (open APIs only; bare calls)."""
        metadata, ready = {}, {}
        for name in known_models():
            try:
                metadata[name] = yield Rpc("get_model_metadata", (name,), dict(as_json=True, client_timeout=timeout))
                ready[name] = bool((yield Rpc("is_model_ready", (name,), dict(client_timeout=timeout))))
            except self._errors as e:
                if not isinstance(from_triton(e), ModelNotFound):
                    raise
        return metadata, ready

    def _server_ready_op(self) -> Op[bool]:
        """Whether the server says it is ready (False when it cannot be asked): tells a drain from a missing model."""
        try:
            return bool((yield Rpc("is_server_ready", (), dict(client_timeout=min(self.timeout or 5.0, 5.0)))))
        except self._errors:
            return False

    def _health_op(self, timeout: float) -> Op[Health]:
        t0 = time.monotonic()
        try:
            live = yield Rpc("is_server_live", (), dict(client_timeout=timeout))
            ready = yield Rpc("is_server_ready", (), dict(client_timeout=timeout))
            meta = yield Rpc("get_server_metadata", (), dict(as_json=True, client_timeout=timeout))
            if self._admin:
                index = (
                    yield Rpc(
                        "get_model_repository_index",
                        (),
                        dict(as_json=True, client_timeout=timeout, headers=self._admin),
                    )
                ).get("models", [])
            else:
                metadata, _ = yield from self._open_metadata_op(timeout)
                index = []
                for n, m in metadata.items():
                    for v in m.get("versions", []):
                        up = yield Rpc("is_model_ready", (n, v), dict(client_timeout=timeout))
                        index.append({"name": n, "version": v, "state": "READY" if up else "UNAVAILABLE"})
        except self._errors as e:
            err = from_triton(e, url=self.url)
            return Health(self.url, False, False, None, {}, time.monotonic() - t0, str(err))
        states = {f"{m['name']}/{m.get('version', '')}": m.get("state", "") for m in index}
        return Health(self.url, bool(live), bool(ready), meta.get("version"), states, time.monotonic() - t0)

    def _check_many(
        self, model: str | None, version: int | str | None, concurrency: int, options: dict[str, Any]
    ) -> None:
        """infer_many fails before its first request on a bad argument."""
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        build_options(options, model or self.model)
        net_version(model or self.model, self._pinned(version))

    @staticmethod
    def _check_file(src: Path, dst: Path) -> None:
        if dst.exists() and dst.resolve() == src.resolve():
            raise InvalidInput(f"refusing to overwrite the input {src}")


# ---------------------------------------------------------------------------------------------------------------
# Synchronous client
# ---------------------------------------------------------------------------------------------------------------


class StylizeClient(ClientCore):
    """Blocking client; thread-safe (one gRPC channel, any number of threads may call it).

    ``version`` pins the network's version for every call (None: the newest one served): the version of
    ``<id>_net``, which keeps the newest two builds servable. Raw frames and video call that version of the network;
    image calls go to the client-facing ensemble with the version as its NET_VERSION input, and its image step runs
    that version (a version the server does not serve is refused with INVALID_ARGUMENT naming the served ones).
    """

    def _connect(self) -> Any:
        return self._grpc.InferenceServerClient(self.url, ssl=self._ssl, channel_args=self._channel_args)

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the channel: calls in flight end at once and retry waits stop (Ctrl-C in the CLI stays snappy)."""
        self._closed.set()
        self._client.close()

    def __enter__(self) -> "StylizeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport ----------------------------------------------------------------------------------------------
    def _run(self, op: Op[T]) -> T:
        """Run an operation: each call it yields is made here, blocking."""
        try:
            rpc = next(op)
            while True:
                try:
                    value = self._do(rpc)
                except BaseException as e:  # the operation may handle it (a bare call's error)
                    rpc = op.throw(e)
                else:
                    rpc = op.send(value)
        except StopIteration as done:
            returned: T = done.value  # what the generator returned: Op[T]'s T (StopIteration.value is Any)
            return returned

    def _do(self, rpc: Rpc) -> Any:
        def call() -> Any:
            return getattr(self._client, rpc.method)(*rpc.args, **rpc.kwargs)

        return call() if rpc.model is None else self._call(rpc.model, call, retry=rpc.retry)

    def _call(self, model: str, op: Callable[[], Any], *, retry: bool = True) -> Any:
        attempts = Attempts(self, model, retry)
        while True:
            attempts.begin()
            try:
                result = op()
            except ValueError:  # grpc's "Cannot invoke RPC on closed channel!"
                if (closed := attempts.closed_channel()) is not None:
                    raise closed from None
                raise
            except self._errors as e:
                err = attempts.error(e)
                if attempts.needs_server_state(err):
                    err = draining(err, self._server_ready)
                delay = attempts.failed(err)
                if delay is None or self._closed.wait(delay):
                    raise err from None
                continue
            attempts.succeeded()
            return result

    def _server_ready(self) -> bool:
        return self._run(self._server_ready_op())

    # ---- images -------------------------------------------------------------------------------------------------
    def infer(
        self, img: ImageLike, model: str | None = None, *, version: int | str | None = None, **options: Any
    ) -> Any:
        """Run one image through a model; returns the same kind it was given (see the module docstring)."""
        data, kind = encode_input(img)
        like = img if isinstance(img, np.ndarray) else None  # kind "array"
        return decode_output(self.infer_bytes(data, model, version=version, **options), kind, like=like)

    def infer_bytes(
        self, data: bytes, model: str | None = None, *, version: int | str | None = None, **options: Any
    ) -> bytes:
        """Encoded image in, encoded result out (PNG unless output_format says otherwise and the server supports it)."""
        return self._run(self._infer_bytes_op(data, model, version, options))

    def infer_file(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        model: str | None = None,
        *,
        version: int | str | None = None,
        **options: Any,
    ) -> Path:
        """Read ``src``, write the result to ``dst`` atomically (never a half-written file); returns ``dst``."""
        src, dst = Path(src), Path(dst)
        self._check_file(src, dst)
        data, _ = encode_input(src)
        write_atomic(dst, self.infer_bytes(data, model, version=version, **options))
        return dst

    def infer_many(
        self,
        items: Iterable[ImageLike],
        model: str | None = None,
        *,
        concurrency: int = 4,
        return_exceptions: bool = False,
        version: int | str | None = None,
        **options: Any,
    ) -> Iterator[Any]:
        """Yield the results of ``items`` in order, ``concurrency`` requests in flight.

        Memory stays bounded: at most ``concurrency`` inputs and results are held, whatever the length of
        ``items`` (which may be a lazy generator). With ``return_exceptions`` a failed item yields its StylizeError
        instead of stopping the iteration.
        """
        self._check_many(model, version, concurrency, options)
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="stylize-infer")
        pending: deque[Future[Any]] = deque()
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
        return self._run(self._raw_model_op(model, version))

    def infer_frames(
        self, frames: np.ndarray, model: str | None = None, *, version: int | str | None = None, tile: int | None = None
    ) -> np.ndarray:
        """uint8 RGB frames through the network directly (no PNG round trip): the path video uses.

        ``frames``: HxWx3 or NxHxWx3 (a window TxHxWx3 or NxTxHxWx3 for windowed models); returns the same layout
        with sides multiplied by the model's scale. Sides are padded to the network's size rules and cropped back.
        Batches larger than the model's max_batch_size are split. Frames larger than the model's tile size (``tile``
        overrides it, 0 disables) go through in overlapping tiles blended exactly as the image ensembles do, so a
        1080p frame never asks the server for more memory than an image request does.
        """
        model = model or self.model
        raw = self.raw_model(model, version=version)
        v = version_arg(self._pinned(version))
        return run_frames(frames, raw, tile_for(raw, tile), lambda batch: self._run(self._infer_raw_op(raw, batch, v)))

    # ---- video --------------------------------------------------------------------------------------------------
    def upscale_video(
        self, src: str | os.PathLike, dst: str | os.PathLike, model: str | None = None, **kwargs: Any
    ) -> "VideoReport":
        """Upscale (or stylize) a video, keeping audio, fps and frame count; see stylize.sdk.video.upscale_video."""
        from stylize.sdk.video import upscale_video

        return upscale_video(self, src, dst, model=model or DEFAULT_VIDEO_MODEL, **kwargs)

    # ---- listing and health -------------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        """Client-facing models with task, scale, ready versions and weights status (read from the server).

        The weights status is in the model configs, an admin API: without the admin key (``admin_key=`` or
        STYLIZE_ADMIN_KEY) the models are found through the open metadata API and ``weights`` is "?"."""
        return self._run(self._models_op())

    def health(self, *, timeout: float = 5.0) -> Health:
        """Liveness, readiness, server version and model states. Never raises for an unreachable server.

        Model states come from the repository index with the admin key; without it, from the open metadata and
        readiness APIs, for the models the descriptors define (READY or UNAVAILABLE per version)."""
        return self._run(self._health_op(timeout))


def _resolve(future: Future[Any], return_exceptions: bool) -> Any:
    try:
        return future.result()
    except StylizeError as e:
        if return_exceptions:
            return e
        raise


__all__ = [
    "StylizeClient",
    "ClientCore",
    "Rpc",
    "RetryPolicy",
    "NO_RETRY",
    "ClientStats",
    "ModelInfo",
    "Health",
    "RawModel",
    "OPTIONS",
    "MAX_MESSAGE_BYTES",
    "ImageLike",
    "kind_of",
    "encode_input",
    "decode_output",
    "build_options",
    "option_tensors",
    "image_format",
    "write_atomic",
]
