"""AsyncStylizeClient: the SDK on gRPC asyncio. The operations are StylizeClient's (stylize.sdk.client.ClientCore),
awaited: only the await differs."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterable, AsyncIterator, Callable, Iterable

import numpy as np

from stylize.contract.errors import StylizeError
from stylize.contract.fileio import write_atomic
from stylize.contract.frames import RawModel
from stylize.sdk.client import Attempts, ClientCore, Op, Rpc, StylizeClient, T
from stylize.sdk.info import Health, ModelInfo, version_arg
from stylize.sdk.request import ImageLike, decode_output, encode_input, run_frames, tile_for
from stylize.sdk.transport import draining

if TYPE_CHECKING:
    from stylize.sdk.video import VideoReport


class AsyncStylizeClient(ClientCore):
    """The same surface on gRPC asyncio: ``await client.infer(img)``, ``async for r in client.infer_many(...)``.

    The channel is created on first use, inside the running event loop. ``upscale_video`` runs the threaded video
    pipeline of the blocking client in a worker thread (decoding and encoding are blocking work anyway).
    """

    def _connect(self) -> Any:
        return None  # tritonclient.grpc.aio's client is made on first use, inside the running event loop

    def _aio(self) -> Any:
        if self._client is None:
            import tritonclient.grpc.aio as aio

            self._client = aio.InferenceServerClient(self.url, ssl=self._ssl, channel_args=self._channel_args)
        return self._client

    async def close(self) -> None:
        """Close the channel; a retry waiting for its backoff stops at its next check."""
        self._closed.set()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> "AsyncStylizeClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- transport ----------------------------------------------------------------------------------------------
    async def _run(self, op: Op[T]) -> T:
        """Run an operation: each call it yields is awaited here."""
        try:
            rpc = next(op)
            while True:
                try:
                    value = await self._do(rpc)
                except BaseException as e:  # the operation may handle it (a bare call's error)
                    rpc = op.throw(e)
                else:
                    rpc = op.send(value)
        except StopIteration as done:
            returned: T = done.value  # what the generator returned: Op[T]'s T (StopIteration.value is Any)
            return returned

    async def _do(self, rpc: Rpc) -> Any:
        client = self._aio()

        def call() -> Any:
            return getattr(client, rpc.method)(*rpc.args, **rpc.kwargs)

        return await (call() if rpc.model is None else self._call(rpc.model, call, retry=rpc.retry))

    async def _call(self, model: str, op: Callable[[], Any], *, retry: bool = True) -> Any:
        attempts = Attempts(self, model, retry)
        while True:
            attempts.begin()
            try:
                result = await op()
            except ValueError:  # grpc's "Cannot invoke RPC on closed channel!"
                if (closed := attempts.closed_channel()) is not None:
                    raise closed from None
                raise
            except self._errors as e:
                err = attempts.error(e)
                if attempts.needs_server_state(err):
                    err = draining(err, await self._server_ready())
                delay = attempts.failed(err)
                if delay is None:
                    raise err from None
                await asyncio.sleep(delay)
                if self._closed.is_set():
                    raise err from None
                continue
            attempts.succeeded()
            return result

    async def _server_ready(self) -> bool:
        return await self._run(self._server_ready_op())

    # ---- images -------------------------------------------------------------------------------------------------
    async def infer(
        self, img: ImageLike, model: str | None = None, *, version: int | str | None = None, **options: Any
    ) -> Any:
        data, kind = encode_input(img)
        like = img if isinstance(img, np.ndarray) else None  # kind "array"
        return decode_output(await self.infer_bytes(data, model, version=version, **options), kind, like=like)

    async def infer_bytes(
        self, data: bytes, model: str | None = None, *, version: int | str | None = None, **options: Any
    ) -> bytes:
        return await self._run(self._infer_bytes_op(data, model, version, options))

    async def infer_file(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        model: str | None = None,
        *,
        version: int | str | None = None,
        **options: Any,
    ) -> Path:
        src, dst = Path(src), Path(dst)
        self._check_file(src, dst)
        data, _ = encode_input(src)
        result = await self.infer_bytes(data, model, version=version, **options)
        await asyncio.to_thread(write_atomic, dst, result)
        return dst

    async def infer_many(
        self,
        items: Iterable[ImageLike] | AsyncIterable[ImageLike],
        model: str | None = None,
        *,
        concurrency: int = 4,
        return_exceptions: bool = False,
        version: int | str | None = None,
        **options: Any,
    ) -> AsyncIterator[Any]:
        """Results in order, ``concurrency`` requests in flight, bounded memory (see StylizeClient.infer_many)."""
        self._check_many(model, version, concurrency, options)
        pending: deque[asyncio.Task[Any]] = deque()

        async def resolve(task: asyncio.Task[Any]) -> Any:
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

    # ---- raw frames ---------------------------------------------------------------------------------------------
    async def raw_model(self, model: str | None = None, *, version: int | str | None = None) -> RawModel:
        return await self._run(self._raw_model_op(model, version))

    async def infer_frames(
        self, frames: np.ndarray, model: str | None = None, *, version: int | str | None = None, tile: int | None = None
    ) -> np.ndarray:
        model = model or self.model
        raw = await self.raw_model(model, version=version)
        v = version_arg(self._pinned(version))
        loop = asyncio.get_running_loop()

        # the tiling/blending code is synchronous: it runs in a worker thread and awaits each batch on this loop
        def run(batch: np.ndarray) -> np.ndarray:
            return asyncio.run_coroutine_threadsafe(self._run(self._infer_raw_op(raw, batch, v)), loop).result()

        return await asyncio.to_thread(run_frames, frames, raw, tile_for(raw, tile), run)

    # ---- video --------------------------------------------------------------------------------------------------
    async def upscale_video(
        self, src: str | os.PathLike, dst: str | os.PathLike, model: str | None = None, **kwargs: Any
    ) -> "VideoReport":
        def run() -> "VideoReport":
            with StylizeClient(
                url=self.url,
                model=self.model,
                version=self.version,
                timeout=self.timeout,
                retry=self.retry,
                compression=self.compression,
                max_message_bytes=self._max_message_bytes,
                ssl=self._ssl,
                metrics=self._metrics,
            ) as client:
                return client.upscale_video(src, dst, model, **kwargs)

        return await asyncio.to_thread(run)

    # ---- listing and health -------------------------------------------------------------------------------------
    async def models(self) -> list[ModelInfo]:
        return await self._run(self._models_op())

    async def health(self, *, timeout: float = 5.0) -> Health:
        return await self._run(self._health_op(timeout))


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


__all__ = ["AsyncStylizeClient"]
