"""Video against the real server: clips with sound made by the ffmpeg binary (Debian `ffmpeg`), upscaled through the
raw-frame path, checked with PyAV: frame count, frame rate, size, audio stream, picture content and order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clips import make_clip, matches, probe  # noqa: E402  (tests/e2e/clips.py; needs PyAV)
from stylize.contract.errors import InvalidInput
from stylize.sdk.client import StylizeClient
from stylize.sdk.transport import RetryPolicy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(server):
    with StylizeClient(url=server.grpc_url, retry=RetryPolicy(deadline=30)) as c:
        yield c


@pytest.fixture(scope="module")
def served(client):
    return {m.id for m in client.models()}


def _need(served, model):
    if model not in served:
        pytest.fail(f"{model} is not in the test repository: every model must be (the suite does not skip one)")


def test_clip_with_audio_comes_back_upscaled(client, served, tmp_path):
    _need(served, "animevideo_x2")
    src = make_clip(tmp_path / "clip.mp4")
    dst = tmp_path / "out" / "clip_x2.mp4"
    report = client.upscale_video(src, dst, "animevideo_x2", preset="veryfast", concurrency=4, progress=False)

    a, b = probe(src), probe(dst)
    assert len(b["frames"]) == len(a["frames"]) == 10 == report.frames
    assert b["rate"] == a["rate"] == 10
    assert b["size"] == (128, 96) and b["codec"] == "h264"
    assert b["audio"] == ["aac"] and report.audio == "copied (aac)"
    assert b["audio_packets"] == a["audio_packets"]  # the sound is copied bit for bit
    assert matches(b["frames"], a["frames"], 2) == list(range(10))  # every frame, in order
    assert report.requests == 10 and report.fps_end_to_end > 0 and len(report.infer_ms) == 10
    assert "frames/s end to end" in report.summary() and "p95" in report.summary()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["clip_x2.mp4"]  # no temporary file left


def test_audio_the_container_cannot_hold_is_reencoded(client, served, tmp_path):
    _need(served, "animevideo_x2")
    src = make_clip(tmp_path / "clip.mkv", audio="pcm_s16le", seconds=0.5)
    dst = tmp_path / "clip.mp4"
    report = client.upscale_video(src, dst, "animevideo_x2", preset="ultrafast", batch=2, progress=False)
    b = probe(dst)
    assert report.audio == "re-encoded (pcm_s16le -> aac)" and b["audio"] == ["aac"]
    assert len(b["frames"]) == 5 and b["rate"] == 10 and b["size"] == (128, 96)
    assert report.requests == 3  # batches of 2 frames: 2 + 2 + 1


def test_style_model_on_video_keeps_the_size(client, served, tmp_path):
    _need(served, "animeganv2")
    src = make_clip(tmp_path / "clip.mp4", size="40x32", seconds=0.3)
    report = client.upscale_video(src, tmp_path / "anime.mkv", "animeganv2", preset="ultrafast", progress=False)
    b = probe(tmp_path / "anime.mkv")
    assert len(b["frames"]) == report.frames == 3 and b["size"] == (40, 32) and b["audio"] == ["aac"]


def test_basicvsr_overlapping_windows(client, served, tmp_path):
    _need(served, "basicvsr_x4")
    src = make_clip(tmp_path / "clip.mp4", size="32x32", seconds=0.9)  # 9 frames; window 7: 2 windows
    dst = tmp_path / "vsr.mp4"
    report = client.upscale_video(src, dst, "basicvsr_x4", preset="ultrafast", progress=False)
    a, b = probe(src), probe(dst)
    assert len(b["frames"]) == len(a["frames"]) == 9 and b["rate"] == 10
    assert b["size"] == (128, 128) and b["audio"] == ["aac"]
    assert report.requests == 2


def test_refusals(client, served, tmp_path):
    _need(served, "animevideo_x2")
    src = make_clip(tmp_path / "clip.mp4", seconds=0.2)
    with pytest.raises(InvalidInput, match="overwrite"):
        client.upscale_video(src, src, "animevideo_x2")
    with pytest.raises(InvalidInput, match="H.264"):
        client.upscale_video(src, tmp_path / "x.webm", "animevideo_x2")
    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"not a video")
    with pytest.raises(InvalidInput):
        client.upscale_video(not_video, tmp_path / "y.mp4", "animevideo_x2", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "notes.mp4"]


def _cli_video(server, src: Path, dst: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stylize.cli",
            "video",
            str(src),
            "-o",
            str(dst),
            "-m",
            "animevideo_x2",
            "--url",
            server.grpc_url,
            "--preset",
            "ultrafast",
            "--segment-frames",
            "10",
            "--no-progress",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal: a shell running this suite in the background (`make test &`, nohup) starts its
        # children with SIGINT ignored, Python then keeps it ignored, and the run would rightly not stop
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _interrupt_once(proc: subprocess.Popen, started) -> tuple[str, str]:
    """SIGINT once ``started()`` is true (mid-run); the CLI's output."""
    try:
        deadline = time.monotonic() + 60
        while not started():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.02)
        assert proc.poll() is None, "the clip finished before the interrupt: make it longer"
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_interrupt_leaves_nothing_under_the_final_name_and_the_rerun_resumes(server, served, tmp_path):
    _need(served, "animevideo_x2")
    src = make_clip(tmp_path / "long.mp4", size="96x64", seconds=20)  # 200 frames: segments of 10
    dst = tmp_path / "out.mp4"
    work = tmp_path / ".out.mp4.stylize-work"
    proc = _cli_video(server, src, dst, "--concurrency", "1")
    out, err = _interrupt_once(proc, lambda: (work / "seg-000001.nut").exists())
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and "the same command continues" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.mp4.stylize-work", "long.mp4"]  # no output
    kept = len(list(work.glob("seg-*.nut")))
    assert 2 <= kept < 20 and not list(work.glob("*.part.nut"))  # finished segments only

    proc = _cli_video(server, src, dst, "--concurrency", "4")  # the same job (concurrency is not part of it)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    assert f"resumed: {kept * 10} frames" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "out.mp4"]
    assert len(probe(dst)["frames"]) == 200


def test_interrupt_without_resume_leaves_nothing_at_all(server, served, tmp_path):
    _need(served, "animevideo_x2")
    src = make_clip(tmp_path / "long.mp4", size="96x64", seconds=20)
    work = tmp_path / ".out.mp4.stylize-work"
    proc = _cli_video(server, src, tmp_path / "out.mp4", "--concurrency", "1", "--no-resume")
    out, err = _interrupt_once(proc, lambda: (work / "seg-000000.nut").exists())
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]  # no output, no temporary file
