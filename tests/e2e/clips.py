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


def make_clip(path: Path, *, size: str = "64x48", rate: int = 10, seconds: float = 1.0, audio: str = "aac",
              video: str = "libx264") -> Path:
    """A real clip: ffmpeg's test pattern (moving) and a 440 Hz tone."""
    subprocess.run([
        ffmpeg(), "-y", "-loglevel", "error",
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds), "-c:v", video, "-pix_fmt", "yuv420p", "-c:a", audio, str(path),
    ], check=True, timeout=120)
    return path


def probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        info = {"frames": frames, "rate": v.average_rate, "size": (v.codec_context.width, v.codec_context.height),
                "codec": v.codec_context.name}
    with av.open(str(path)) as c:
        info["audio"] = [s.codec_context.name for s in c.streams.audio]
        info["audio_packets"] = ([bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
                                 if c.streams.audio else [])
    return info
