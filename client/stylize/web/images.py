"""One photo through an image ensemble, with progress that is counted, not guessed, and Triton's response cache.

The ensemble runs the whole photo in one unary call, and on a CPU repository its step runs the network in its own
process: nothing outside the server can see its tiles go by. So:

* a photo the server would run in one network call (within one call's pixel budget, or a model that is not tiled)
  goes to the ensemble as it is, with its options: one request, progress "1 tile of 1" when Triton answers;
* a photo the server would tile goes to the ensemble **tile by tile**: this process runs the step's own pipeline
  (stylize.engine.pipeline.process: decode, shrink, pad, the same tile plan and feathered blending, resize,
  recompose, encode, with the step's settings read from the server) and its network callable sends each tile to
  the ensemble as a lossless PNG. Each tile the server answers is one progress event. The server's step sees a
  tile within one call's budget, so it runs it as one network call and returns it untouched: the blended result is
  byte for byte what the ensemble returns for the whole photo (tests/e2e/test_web.py checks it). Each tile request
  is a request Triton's response cache can answer: a repeated photo is answered tile by tile from the cache;
* a file this process cannot read or a request its pipeline refuses is sent to the ensemble as it is, so the reason
  the page shows is the server's (INVALID_ARGUMENT and its text), not ours.

Whether the cache answered is measured, per request, as the change of ``cache_hit_count`` and ``cache_miss_count``
(Triton's model statistics) across it, on the model whose config enables the cache (the ensemble, or its image
step: catalog.ModelEntry.cache_models). Requests to one model go one at a time from this process, so its own
requests never blur the count; a request of another client to the same model finishing in the same window can
(both counts move): that request is reported as "unknown", never guessed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from stylize.contract.descriptors import OUTPUT_FORMAT
from stylize.contract.errors import InvalidInput, ModelNotFound, from_triton
from stylize.contract.tiling import plan_tiles
from stylize.engine.imaging import InvalidImage, decode, fit_within
from stylize.engine.pipeline import Options, parse_options, process
from stylize.sdk.request import decode_output, encode_input, option_tensors

from .catalog import ModelEntry
from .jobs import Cancelled

# ---------------------------------------------------------------------------------------------------------------
# Response cache outcome of one request
# ---------------------------------------------------------------------------------------------------------------

HIT, MISS, OFF, UNKNOWN = "hit", "miss", "off", "unknown"


def outcome(hits: int, misses: int) -> str:
    """What the change of the two counters across one request says about it."""
    if hits == 1 and misses == 0:
        return HIT
    if misses == 1 and hits == 0:
        return MISS
    if hits == 0 and misses == 0:
        return OFF  # no lookup at all: the server runs without a response cache (or the model has it disabled)
    return UNKNOWN  # another client's request on the same model finished in the same window


def cache_summary(outcomes: Counter, requests: int, cache_models: tuple[str, ...]) -> dict[str, Any]:
    """The page's cache line for one job, from its requests' outcomes."""
    hits, misses, off, unknown = (outcomes[k] for k in (HIT, MISS, OFF, UNKNOWN))
    noun = "tiles" if requests > 1 else "request"
    if requests and hits == requests:
        text = "Answered from Triton's response cache" + (f" (all {requests} tiles)" if requests > 1 else "")
    elif off == requests:
        text = "Computed by Triton; its response cache is off (start the server with a cache size)"
    elif hits:
        text = f"Computed by Triton; {hits} of {requests} tiles came from its response cache"
    else:
        text = "Computed by Triton: not in its response cache yet (an identical request can be answered from it)"
    if unknown:
        text += f" ({unknown} {noun} could not be attributed: other requests to this model at the same time)"
    return {
        "requests": requests,
        "hits": hits,
        "misses": misses,
        "off": off,
        "unknown": unknown,
        "answered_from_cache": bool(requests) and hits == requests,
        "text": text,
        "measured_by": f"change of cache_hit_count / cache_miss_count of {' + '.join(cache_models)} "
        "(Triton's model statistics) across each request",
    }


class CacheCounter:
    """Runs requests to a model one at a time, reading the cache counters of ``cache_models`` before and after
    each (statistics are an open API: no admin key needed)."""

    def __init__(self, triton):
        self._triton = triton  # tritonclient.grpc.aio.InferenceServerClient
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def _counters(self, models: tuple[str, ...]) -> tuple[int, int]:
        hits = misses = 0
        for model in models:
            try:
                stats = await self._triton.get_inference_statistics(model, as_json=True)
            except Exception as e:  # noqa: BLE001 - tritonclient's and grpc's errors become ours
                err = from_triton(e, model=model)
                if isinstance(err, ModelNotFound):
                    continue  # a candidate this repository does not have
                raise err from None
            for entry in stats.get("model_stats", []):
                inference = entry.get("inference_stats", {})
                hits += int(inference.get("cache_hit", {}).get("count", 0))
                misses += int(inference.get("cache_miss", {}).get("count", 0))
        return hits, misses

    async def run(self, model: str, cache_models: tuple[str, ...], request: Callable[[], Any]) -> tuple[Any, str]:
        async with self._locks[model]:
            h0, m0 = await self._counters(cache_models)
            result = await request()
            h1, m1 = await self._counters(cache_models)
        return result, outcome(h1 - h0, m1 - m0)


# ---------------------------------------------------------------------------------------------------------------
# The photo
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ImageResult:
    data: bytes
    size: tuple[int, int]  # (width, height) of the result
    input_size: tuple[int, int] | None
    tiles: int
    cache: dict[str, Any]
    path: str  # "whole" (one request, as sent) | "tiles" (tile by tile) | "server" (refused here, asked Triton)


def planned_tiles(height: int, width: int, entry: ModelEntry, options: Options) -> int:
    """Network calls the step makes for a photo of this size: the step's own rule (pipeline.process)."""
    step = entry.step
    max_side = options.max_side or step.max_side
    if max_side:
        height, width = fit_within(height, width, max_side)
    tile = options.tile_size or step.tile_size
    if not tile:
        return 1
    m = step.size_multiple
    ph = max(-(-height // m) * m, step.min_size)
    pw = max(-(-width // m) * m, step.min_size)
    return plan_tiles(
        ph, pw, tile=tile, overlap=step.tile_overlap, multiple=m, batch=step.tile_batch, max_side=step.max_tile_side
    ).count


def result_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


class ImageRunner:
    def __init__(self, client, cache: CacheCounter):
        self._client = client  # AsyncStylizeClient
        self._cache = cache

    async def _ensemble(self, entry: ModelEntry, data: bytes, options: dict[str, Any]) -> tuple[bytes, str]:
        return await self._cache.run(
            entry.id, entry.cache_models, lambda: self._client.infer_bytes(data, entry.id, **options)
        )

    async def run(
        self,
        data: bytes,
        entry: ModelEntry,
        options: dict[str, Any],
        *,
        on_progress: Callable[[int, int], None],
        cancel,
    ) -> ImageResult:
        """``options``: validated by stylize.sdk.client.build_options; ``on_progress(done, total)`` runs on the loop."""
        step = entry.step
        if entry.step_source != "server":  # the server's tile plan is unknown here: the photo goes whole
            try:
                picture = await asyncio.to_thread(decode, data, limits=step.limits)
                input_size = (picture.size[1], picture.size[0])
            except InvalidImage:
                input_size = None
            return await self._as_is(data, entry, options, on_progress, input_size=input_size, path="whole")

        def plan() -> tuple[tuple[int, int], Options, int]:
            picture = decode(data, limits=step.limits)
            # the options exactly as the SDK puts them on the wire (optional input tensors)
            parsed = parse_options(step, tensors={name: arr for name, _, arr in option_tensors(options)})
            return (picture.size[1], picture.size[0]), parsed, planned_tiles(*picture.size, entry, parsed)

        try:
            input_size, parsed, total = await asyncio.to_thread(plan)
        except InvalidImage:
            return await self._as_is(data, entry, options, on_progress, input_size=None, path="server")
        if total == 1:
            return await self._as_is(data, entry, options, on_progress, input_size=input_size, path="whole")
        return await self._tiled(data, entry, options, parsed, total, input_size, on_progress, cancel)

    async def _as_is(self, data, entry, options, on_progress, *, input_size, path) -> ImageResult:
        on_progress(0, 1)
        result, seen = await self._ensemble(entry, data, options)
        on_progress(1, 1)
        return ImageResult(
            data=result,
            size=result_size(result),
            input_size=input_size,
            tiles=1,
            cache=cache_summary(Counter([seen]), 1, entry.cache_models),
            path=path,
        )

    async def _tiled(
        self, data, entry, options, parsed: Options, total: int, input_size, on_progress, cancel
    ) -> ImageResult:
        loop = asyncio.get_running_loop()
        outcomes: Counter = Counter()
        done = 0
        png = {OUTPUT_FORMAT.name: "PNG"}  # lossless tiles whatever the repository's default format

        async def one_tile(tile: np.ndarray) -> np.ndarray:
            encoded, _ = encode_input(tile)
            result, seen = await self._ensemble(entry, encoded, png)
            outcomes[seen] += 1
            return decode_output(result, "array")

        def network(batch: np.ndarray) -> np.ndarray:
            """The pipeline's network callable (a worker thread): each tile is one ensemble request on the loop."""
            nonlocal done
            outs = []
            for tile in batch:
                if cancel.is_set():
                    raise Cancelled()
                outs.append(_wait(asyncio.run_coroutine_threadsafe(one_tile(np.ascontiguousarray(tile)), loop), cancel))
                done += 1
                loop.call_soon_threadsafe(on_progress, done, total)
            return np.stack(outs)

        on_progress(0, total)
        try:
            result, report = await asyncio.to_thread(process, data, entry.step, parsed, network)
        except InvalidImage as e:
            if done == 0:  # refused before any tile: let the server say it in its own words
                return await self._as_is(data, entry, options, on_progress, input_size=input_size, path="server")
            raise InvalidInput(f"invalid input: {e}", reason=str(e), model=entry.id) from None
        if report.tiles != total or done != total:
            raise RuntimeError(f"planned {total} tiles, the pipeline made {report.tiles} calls for {done} tiles")
        return ImageResult(
            data=result,
            size=result_size(result),
            input_size=input_size,
            tiles=total,
            cache=cache_summary(outcomes, total, entry.cache_models),
            path="tiles",
        )


def _wait(future: concurrent.futures.Future, cancel) -> Any:
    """A tile's answer, in the pipeline's thread; gives up when the job is cancelled (the page server stopping
    must not leave this thread waiting on a loop that no longer runs)."""
    while True:
        try:
            return future.result(timeout=0.5)
        except concurrent.futures.TimeoutError:
            if cancel.is_set():
                future.cancel()
                raise Cancelled() from None


__all__ = ["CacheCounter", "ImageResult", "ImageRunner", "cache_summary", "outcome", "planned_tiles"]
