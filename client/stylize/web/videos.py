"""One clip through the raw-frame path (stylize.sdk.video.upscale_video: decode, the network with requests in flight,
H.264, sound kept). Progress is its own count of frames written, against the container's frame count.

Frames go to the network model directly, not through an ensemble: Triton's response cache is not involved, and the
page says so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .catalog import ModelEntry
from .jobs import Cancelled

NO_CACHE = {
    "requests": 0,
    "answered_from_cache": False,
    "text": "Frames go to the network model directly (raw frames): Triton's response cache does not apply",
}


@dataclass
class VideoResult:
    frames: int
    fps: float
    input_size: tuple[int, int]
    size: tuple[int, int]
    audio: str
    requests: int


async def run_video(
    client, src: Path, dst: Path, entry: ModelEntry, *, on_progress: Callable[[int, int | None], None], cancel
) -> VideoResult:
    """``client``: AsyncStylizeClient; ``on_progress(frames_written, total)`` runs on the event loop."""
    loop = asyncio.get_running_loop()

    def progress(done: int, total: int | None) -> None:  # the encoding thread of stylize.sdk.video
        if cancel.is_set():
            raise Cancelled()
        loop.call_soon_threadsafe(on_progress, done, total)

    # resume=False: a job's result name is never run again, so an interrupted job must leave no segments behind
    report = await client.upscale_video(src, dst, entry.id, progress=False, on_progress=progress, resume=False)
    return VideoResult(
        frames=report.frames,
        fps=report.fps,
        input_size=report.size_in,
        size=report.size_out,
        audio=report.audio,
        requests=report.requests,
    )


__all__ = ["NO_CACHE", "VideoResult", "run_video"]
