"""Live mode against the real server: a real FIFO fed by the ffmpeg binary in real time (`-re`) from a clip of a real
photo, read by `stylize video --live` as it arrives; its output read while it is still being written.

Checked: a decodable output packet exists while the ffmpeg writer still holds the FIFO open (frames come out while
input is still arriving), every frame comes out once and in order with the source's timestamps, and the report has
its figures. The drop policy is checked on an input written as fast as ffmpeg can (far faster than the network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from clips import ffmpeg, frame_times, matches, probe  # noqa: E402
from stylize.contract.errors import InvalidInput
from stylize.sdk.client import StylizeClient
from stylize.sdk.transport import RetryPolicy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MODEL = "animevideo_x2"


@pytest.fixture(scope="module")
def client(server):
    with StylizeClient(url=server.grpc_url, retry=RetryPolicy(deadline=30)) as c:
        if MODEL not in {m.id for m in c.models()}:
            pytest.fail(f"{MODEL} is not in the test repository: every model must be (the suite does not skip one)")
        yield c


def _pan_clip(path: Path, *, seconds: float = 4, rate: int = 10) -> Path:
    """96x64 H.264 clip of a real photo (skimage's astronaut) panning 3 px per frame right and down: every frame
    differs from the others, for the whole clip."""
    from stylize.engine.photos import photo_path

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
            "scale=384:384,crop=96:64:x='t*30':y='t*30'",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def _packets_so_far(path: Path) -> int:
    """Video packets a reader finds in ``path`` now (a file still being written: a torn last packet ends it)."""
    if not path.exists() or not path.stat().st_size:
        return 0
    n = 0
    try:
        with av.open(str(path), format="mpegts") as c:
            for p in c.demux(video=0):
                n += bool(p.size)
    except (av.error.FFmpegError, IndexError):
        pass
    return n


def _feed(clip: Path, fifo: Path, *, realtime: bool) -> subprocess.Popen:
    """ffmpeg writing ``clip`` into ``fifo`` as MPEG-TS (packets copied); at the clip's own pace with ``realtime``."""
    return subprocess.Popen(
        [
            ffmpeg(),
            "-nostdin",
            "-loglevel",
            "error",
            *(["-re"] if realtime else []),
            "-i",
            str(clip),
            "-c",
            "copy",
            "-f",
            "mpegts",
            "-y",
            str(fifo),
        ]
    )


def test_live_fifo_frames_come_out_while_input_arrives(server, client, tmp_path):
    clip = _pan_clip(tmp_path / "clip.mp4")  # 40 frames, 4 s at -re
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    out, report_path, plot = tmp_path / "live.ts", tmp_path / "live.json", tmp_path / "live.png"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")]))
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stylize.cli",
            "video",
            "--live",
            str(fifo),
            "-o",
            str(out),
            "-m",
            MODEL,
            "--url",
            server.grpc_url,
            "--report",
            str(report_path),
            "--plot",
            str(plot),
            "-j",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = _feed(clip, fifo, realtime=True)
    early = 0  # packets readable in the output while the writer still had the FIFO open
    try:
        deadline = time.monotonic() + 120
        while writer.poll() is None and time.monotonic() < deadline:
            n = _packets_so_far(out)
            if n and writer.poll() is None:  # read, and the writer was still running after the read
                early = n
                break
            time.sleep(0.05)
        assert writer.wait(timeout=120) == 0
        stdout, stderr = cli.communicate(timeout=120)
    finally:
        for p in (writer, cli):
            if p.poll() is None:
                p.kill()
    assert cli.returncode == 0, (stdout, stderr)
    assert early >= 1, "no output packet could be read before the input's writer closed the FIFO"

    src, got = probe(clip), probe(out)
    assert len(got["frames"]) == len(src["frames"]) == 40
    assert got["size"] == (192, 128) and got["codec"] == "h264"
    assert matches(got["frames"], src["frames"], 2) == list(range(40))  # every frame once, in order
    t_src, t_out = frame_times(clip), frame_times(out)
    assert [t - t_out[0] for t in t_out] == [t - t_src[0] for t in t_src]  # the source's timing, frame for frame

    report = json.loads(report_path.read_text())
    assert report["format"] == "stylize-live/1"
    assert report["frames_in"] == report["frames_out"] == 40 and report["dropped"] == 0
    assert report["frame_index"] == list(range(40)) and len(report["latency_ms"]) == 40
    # the figures are those of the per-frame list (no ordering of durations asserted: time is the benchmarks')
    lat, per_frame = report["figures"]["latency_ms"], report["latency_ms"]
    assert all(ms > 0 for ms in per_frame)
    for key, value in (
        ("p50", np.percentile(per_frame, 50)),
        ("p95", np.percentile(per_frame, 95)),
        ("max", max(per_frame)),
        ("mean", np.mean(per_frame)),
    ):
        assert lat[key] == pytest.approx(value, abs=0.01), key
    assert report["figures"]["fps_out"] > 0 and report["figures"]["target_ms"] > 0
    # output before the input's end is `early` above (a packet read while the writer ran): the report's two moments
    # are recorded, not compared
    assert report["first_output_s"] >= 0 and report["input_end_s"] >= 0
    assert report["queue_high_water"] <= report["queue"]
    for stage in ("decode", "network", "encode"):
        assert report["stages"][stage]["busy_s"] > 0 and len(report["intervals"][stage]) > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "p95" in stdout and "frames/s out" in stdout


def test_live_drop_policy_keeps_order_and_counts_drops(client, tmp_path):
    from stylize.sdk.video_live import stream_video

    clip = _pan_clip(tmp_path / "clip.mp4")
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = _feed(clip, fifo, realtime=False)  # as fast as ffmpeg goes: decoding outruns one request at a time
    try:
        report = stream_video(
            client, fifo, tmp_path / "live.mp4", model=MODEL, policy="drop", queue_size=1, concurrency=1
        )
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    assert report.frames_in == 40
    assert report.dropped > 0 and report.frames_out + report.dropped == 40
    assert report.queue_high_water <= 1
    got = probe(tmp_path / "live.mp4")  # fragmented MP4
    assert len(got["frames"]) == report.frames_out
    src = probe(clip)
    assert matches(got["frames"], src["frames"], 2) == report.frame_index  # the frames said kept, in order
    assert report.frame_index == sorted(set(report.frame_index))


def test_live_refusals(client, tmp_path):
    from stylize.sdk.video_live import stream_video

    with pytest.raises(InvalidInput, match="no such input"):
        stream_video(client, tmp_path / "missing.ts", tmp_path / "o.ts", model=MODEL)
    with pytest.raises(InvalidInput, match="live output"):
        stream_video(client, tmp_path / "missing.ts", tmp_path / "o.avi", model=MODEL)
    with pytest.raises(InvalidInput, match="policy"):
        stream_video(client, tmp_path / "missing.ts", tmp_path / "o.ts", model=MODEL, policy="grow")


def _cli(server, *args: str) -> list[str]:
    return [sys.executable, "-m", "stylize.cli", "video", "--live", *args, "-m", MODEL, "--url", server.grpc_url]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")]))


def test_live_stdin_to_stdout(server, client, tmp_path):
    clip = _pan_clip(tmp_path / "clip.mp4", seconds=2)
    feed = subprocess.Popen(
        [ffmpeg(), "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy", "-f", "mpegts", "-"],
        stdout=subprocess.PIPE,
    )
    try:
        proc = subprocess.run(
            _cli(server, "-", "-o", "-"), stdin=feed.stdout, capture_output=True, env=_env(), timeout=120
        )
    finally:
        feed.stdout.close()
        feed.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert b"frames/s out" in proc.stderr  # the summary goes to stderr: stdout is the stream
    out = tmp_path / "stdout.ts"
    out.write_bytes(proc.stdout)
    src, got = probe(clip), probe(out)
    assert len(got["frames"]) == len(src["frames"]) == 20 and got["size"] == (192, 128)
    assert matches(got["frames"], src["frames"], 2) == list(range(20))


def test_live_follows_a_growing_file(server, client, tmp_path):
    clip = _pan_clip(tmp_path / "clip.mp4", seconds=2)
    growing = tmp_path / "growing.ts"
    writer = subprocess.Popen(
        [
            ffmpeg(),
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-i",
            str(clip),
            "-c",
            "copy",
            "-f",
            "mpegts",
            "-flush_packets",
            "1",
            "-y",
            str(growing),
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while not (growing.exists() and growing.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc = subprocess.run(
            _cli(server, str(growing), "--follow", "2", "-o", str(tmp_path / "out.mkv")),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    assert proc.returncode == 0, proc.stderr[-2000:]
    src, got = probe(clip), probe(tmp_path / "out.mkv")
    assert len(got["frames"]) == len(src["frames"]) == 20  # read past the end while it grew, to the last frame
    assert matches(got["frames"], src["frames"], 2) == list(range(20))
