"""`stylize video --outscale S` and `--fps F`, as Real-ESRGAN's video script means them, on short real clips (made by
the ffmpeg binary) through the real server; sizes and frame rates read back with ffprobe, pictures with PyAV."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from clips import ffprobe_json, make_clip, probe  # noqa: E402  (tests/e2e/clips.py; needs PyAV)
from stylize.cli import main
from stylize.contract.errors import InvalidInput
from stylize.sdk.client import StylizeClient
from stylize.sdk.transport import RetryPolicy

pytestmark = pytest.mark.e2e

MODEL = "animevideo_x2"


@pytest.fixture(scope="module")
def client(server):
    with StylizeClient(url=server.grpc_url, retry=RetryPolicy(deadline=30)) as c:
        yield c


def _video_stream(path) -> dict:
    info = ffprobe_json(
        path,
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=width,height,r_frame_rate,avg_frame_rate,nb_read_frames:format=duration",
    )
    return {**info["streams"][0], "duration": float(info["format"]["duration"])}


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_outscale_resizes_the_network_s_frames_to_s_times_the_input(server, client, tmp_path, capsys):
    from stylize.engine.imaging import resize

    src = make_clip(tmp_path / "clip.mp4")  # 64x48, 10 frames at 10 fps, AAC
    plain = tmp_path / "x2.mp4"
    client.upscale_video(src, plain, MODEL, preset="ultrafast", crf=0, progress=False)  # x264 lossless
    out = tmp_path / "x1.5.mp4"
    assert (
        main(
            [
                "video",
                str(src),
                "-o",
                str(out),
                "-m",
                MODEL,
                "--outscale",
                "1.5",
                "--preset",
                "ultrafast",
                "--crf",
                "0",
                "--url",
                server.grpc_url,
                "--no-progress",
            ]
        )
        == 0
    )
    assert "64x48 -> 96x72 at 10 fps" in capsys.readouterr().out
    v = _video_stream(out)
    assert (v["width"], v["height"], v["r_frame_rate"], int(v["nb_read_frames"])) == (96, 72, "10/1", 10)
    a, b, x2 = probe(src), probe(out), probe(plain)
    assert b["audio_packets"] == a["audio_packets"]  # the sound is copied bit for bit, as without --outscale
    # each frame is the network's x2 picture resized to 96x72, up to 4:2:0 and rounding (compared in luma)
    assert len(b["frames"]) == len(x2["frames"]) == 10
    for got, net in zip(b["frames"], x2["frames"]):
        assert _psnr(_luma(got), _luma(resize(net, (72, 96)))) > 40
    # larger than the network's scale: the x2 frames resized up
    big = client.upscale_video(src, tmp_path / "x3.mkv", MODEL, outscale=3, preset="ultrafast", progress=False)
    assert big.size_out == (192, 144)
    v = _video_stream(tmp_path / "x3.mkv")
    assert (v["width"], v["height"], int(v["nb_read_frames"])) == (192, 144, 10)


def test_fps_sets_the_output_frame_rate_and_keeps_every_frame(server, client, tmp_path, capsys):
    src = make_clip(tmp_path / "clip.mp4")  # 10 frames at 10 fps: 1 s
    out = tmp_path / "fast.mp4"
    assert (
        main(
            [
                "video",
                str(src),
                "-o",
                str(out),
                "-m",
                MODEL,
                "--fps",
                "25",
                "--preset",
                "ultrafast",
                "--crf",
                "0",
                "--url",
                server.grpc_url,
                "--no-progress",
            ]
        )
        == 0
    )
    assert "at 25 fps" in capsys.readouterr().out
    v = _video_stream(out)
    assert (v["width"], v["height"], int(v["nb_read_frames"])) == (128, 96, 10)
    assert v["r_frame_rate"] == v["avg_frame_rate"] == "25/1"
    a, b = probe(src), probe(out)
    assert b["audio_packets"] == a["audio_packets"]  # audio kept as it is (its own timing)
    # every frame in order, 1/25 s apart: the same pictures as a run at the source's rate (x264 lossless: the
    # encoder's rate control depends on the frame rate otherwise)
    same_rate = client.upscale_video(src, tmp_path / "same.mp4", MODEL, preset="ultrafast", crf=0, progress=False)
    assert same_rate.fps == 10
    for got, ref in zip(b["frames"], probe(tmp_path / "same.mp4")["frames"]):
        np.testing.assert_array_equal(got, ref)
    with av.open(str(out)) as c:
        times = [f.pts * f.time_base for f in c.decode(video=0)]
    assert times == [Fraction(i, 25) for i in range(10)]
    # a rate that is not an integer, as NTSC's
    report = client.upscale_video(src, tmp_path / "ntsc.mkv", MODEL, fps=23.976, preset="ultrafast", progress=False)
    assert report.fps == pytest.approx(23.976)
    v = _video_stream(tmp_path / "ntsc.mkv")
    assert Fraction(v["avg_frame_rate"]) == Fraction(2997, 125) and int(v["nb_read_frames"]) == 10


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"outscale": 0}, "outscale 0"),
        ({"outscale": 17}, "outscale 17"),
        ({"fps": 0}, "fps 0"),
        ({"fps": float("nan")}, "fps nan"),
        ({"fps": 5000}, "fps 5000"),
    ],
)
def test_bad_outscale_and_fps_are_refused_before_any_request(client, tmp_path, kwargs, words):
    src = make_clip(tmp_path / "clip.mp4", seconds=0.2)
    with pytest.raises(InvalidInput, match=words):
        client.upscale_video(src, tmp_path / "out.mp4", MODEL, progress=False, **kwargs)
    assert not (tmp_path / "out.mp4").exists()


def test_outscale_and_fps_are_not_for_live(tmp_path, capsys):
    assert main(["video", "-", "-o", str(tmp_path / "o.ts"), "--live", "--fps", "25"]) == 2
    assert "--outscale and --fps apply to files" in capsys.readouterr().err
