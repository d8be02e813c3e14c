"""Test clips made by the ffmpeg binary (Debian `ffmpeg`, installed by the Makefile) and read back with PyAV."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.fail("the video tests make their clips with ffmpeg: apt-get install ffmpeg (the Makefile does)")
    return exe


def make_clip(
    path: Path, *, size: str = "64x48", rate: int = 10, seconds: float = 1.0, audio: str = "aac", video: str = "libx264"
) -> Path:
    """A real clip: ffmpeg's test pattern (moving) and a 440 Hz tone."""
    subprocess.run(
        [
            ffmpeg(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate={rate}",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            str(seconds),
            "-c:v",
            video,
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            audio,
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        info = {
            "frames": frames,
            "rate": v.average_rate,
            "size": (v.codec_context.width, v.codec_context.height),
            "codec": v.codec_context.name,
        }
    with av.open(str(path)) as c:
        info["audio"] = [s.codec_context.name for s in c.streams.audio]
        info["audio_packets"] = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size] if c.streams.audio else []
    return info


def photo_clip(
    path: Path,
    *,
    size: str = "64x48",
    rate: int = 10,
    seconds: float = 0.5,
    vf: str = "",
    extra: list[str] | None = None,
) -> Path:
    """A clip of a real photo (skimage's astronaut) panning slowly, H.264, no sound; ``vf`` appends filters."""
    from stylize.engine.photos import photo_path

    w, h = (int(x) for x in size.split("x"))
    chain = f"scale={2 * w}:{2 * h},crop={w}:{h}:x='t*40':y=0" + (f",{vf}" if vf else "")
    subprocess.run(
        [
            ffmpeg(),
            "-y",
            "-loglevel",
            "error",
            "-loop",
            "1",
            "-framerate",
            str(rate),
            "-i",
            str(photo_path("astronaut.png")),
            "-t",
            str(seconds),
            "-vf",
            chain,
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            *(extra or []),
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def with_display_rotation(src: Path, dst: Path, degrees: int) -> Path:
    """``src`` remuxed (packets copied) with a display matrix: players turn it ``degrees`` counterclockwise.

    PyAV writes it: Debian's ffmpeg 5.1 has no -display_rotation, and its `rotate` tag no longer sets the matrix.
    """
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        s = o.add_stream_from_template(i.streams.video[0])
        s.set_display_rotation(degrees)
        for p in i.demux(i.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                o.mux(p)
    return dst


def decode_upright(path: Path, pix_fmt: str = "rgb24") -> list:
    """Frames as the ffmpeg binary shows them (rotation applied, colour tags honoured): an independent reference."""
    import av
    import numpy as np

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        w, h = v.codec_context.width, v.codec_context.height
        rot = next(c.decode(video=0)).rotation
    if rot in (90, -90, 270):
        w, h = h, w
    raw = subprocess.run(
        [ffmpeg(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout
    arr = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    return list(arr)


def frame_times(path: Path) -> list:
    """Presentation time of each decoded frame, exact (Fraction seconds)."""
    import av

    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


def ffprobe_json(path: Path, *args: str) -> dict:
    import json

    exe = shutil.which("ffprobe")
    out = subprocess.run(
        [exe, "-v", "error", "-of", "json", *args, str(path)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return json.loads(out)


def matches(out_frames, in_frames, scale: int) -> list[int]:
    """Index of the input frame each output frame resembles most (after shrinking it back)."""
    import numpy as np
    from PIL import Image

    best = []
    for o in out_frames:
        small = np.asarray(
            Image.fromarray(o).resize((o.shape[1] // scale, o.shape[0] // scale), Image.Resampling.BOX)
        ).astype(np.int16)
        best.append(int(np.argmin([np.abs(small - i.astype(np.int16)).mean() for i in in_frames])))
    return best
