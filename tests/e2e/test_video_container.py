"""`stylize video` keeps the whole container, against the real server: rotation, variable frame rate, every audio
track, subtitles, chapters and metadata, colour tags, 10-bit input without banding, and resume after an interruption.

Clips are made here by the ffmpeg binary (Debian `ffmpeg`) from a real photo and lavfi sources, tiny (64x48, under
a second), and checked with PyAV, ffprobe and the ffmpeg binary's own decoding (rotation and colour applied by it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from clips import decode_upright, ffmpeg, ffprobe_json, frame_times, make_clip, photo_clip, probe, with_display_rotation  # noqa: E402
from PIL import Image
from stylize.sdk.client import StylizeClient
from stylize.sdk.transport import RetryPolicy

pytestmark = pytest.mark.e2e

MODEL = "animevideo_x2"


@pytest.fixture(scope="module")
def client(server):
    with StylizeClient(url=server.grpc_url, retry=RetryPolicy(deadline=30)) as c:
        if MODEL not in {m.id for m in c.models()}:
            pytest.fail(f"{MODEL} is not in the test repository: every model must be (the suite does not skip one)")
        yield c


def _shrink(frame: np.ndarray, scale: int = 2) -> np.ndarray:
    h, w = frame.shape[0] // scale, frame.shape[1] // scale
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BOX)).astype(np.float64)


def _packets(path: Path, kind: str) -> list[list[bytes]]:
    with av.open(str(path)) as c:
        streams = getattr(c.streams, kind)
        out: list[list[bytes]] = [[] for _ in streams]
        index = {s.index: i for i, s in enumerate(streams)}
        for p in c.demux(*streams):
            if p.size:
                out[index[p.stream.index]].append(bytes(p))
    return out


def _has_display_matrix(path: Path) -> bool:
    info = ffprobe_json(path, "-show_streams", "-select_streams", "v")
    return any(
        sd.get("side_data_type") == "Display Matrix" for s in info["streams"] for sd in s.get("side_data_list", [])
    )


def test_rotated_phone_clip_comes_out_upright(client, tmp_path):
    # a phone's portrait video: pixels stored landscape (the scene turned clockwise), a display matrix of +90
    stored = photo_clip(tmp_path / "stored.mp4", size="48x64", seconds=0.3, vf="transpose=clock")
    src = with_display_rotation(stored, tmp_path / "phone.mp4", 90)
    assert _has_display_matrix(src)
    upright = decode_upright(src)  # ffmpeg's own autorotation: the reference
    assert upright[0].shape == (64, 48, 3)

    dst = tmp_path / "phone_x2.mp4"
    report = client.upscale_video(src, dst, MODEL, preset="ultrafast", progress=False)

    out = probe(dst)
    assert report.rotation == 90 and out["size"] == (96, 128) == report.size_out  # portrait, x2
    assert not _has_display_matrix(dst)  # upright pixels, nothing left for a player to turn
    err = np.mean([np.abs(_shrink(o) - u).mean() for o, u in zip(out["frames"], upright)])
    err_turned = np.mean([np.abs(_shrink(o) - np.rot90(u, 2)).mean() for o, u in zip(out["frames"], upright)])
    assert len(out["frames"]) == len(upright) == 3
    assert err < 8 and err_turned > 3 * err, (err, err_turned)


def _vfr_clip(path: Path) -> Path:
    """A 30 fps test pattern with irregular gaps (every 3rd frame plus some others), timestamps kept (-fps_mode vfr)."""
    subprocess.run(
        [
            ffmpeg(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=30,select='not(mod(n\\,3))+eq(mod(n\\,7)\\,1)'",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "1",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def test_variable_frame_rate_keeps_every_frame_timestamp(client, tmp_path):
    src = _vfr_clip(tmp_path / "vfr.mp4")
    times_in = frame_times(src)
    gaps = {b - a for a, b in zip(times_in, times_in[1:])}
    assert len(gaps) >= 2, f"the clip is not variable-rate: {gaps}"

    dst = tmp_path / "vfr_x2.mp4"
    report = client.upscale_video(src, dst, MODEL, preset="ultrafast", segment_frames=4, progress=False)

    assert frame_times(dst) == times_in  # every frame at its own time, exactly (as Fractions of a second)
    assert report.frames == len(times_in) and report.segments == -(-len(times_in) // 4)
    assert _packets(dst, "audio") == _packets(src, "audio")


def _srt(path: Path) -> Path:
    path.write_text("1\n00:00:00,000 --> 00:00:00,400\nHello\n\n2\n00:00:00,500 --> 00:00:00,900\nWorld\n\n")
    return path


def _rich_clip(tmp_path: Path) -> Path:
    """Matroska: video, two audio tracks (AAC eng, MP3 fra), SubRip subtitles, two chapters and a title."""
    meta = tmp_path / "meta.txt"
    meta.write_text(
        ";FFMETADATA1\ntitle=Holiday clip\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=Beach\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Sunset\n"
    )
    path = tmp_path / "rich.mkv"
    subprocess.run(
        [
            ffmpeg(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=660:sample_rate=44100",
            "-i",
            str(_srt(tmp_path / "subs.srt")),
            "-i",
            str(meta),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-map",
            "2:a",
            "-map",
            "3:s",
            "-map_metadata",
            "4",
            "-map_chapters",
            "4",
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a:0",
            "aac",
            "-c:a:1",
            "libmp3lame",
            "-c:s",
            "srt",
            "-metadata:s:a:0",
            "language=eng",
            "-metadata:s:a:0",
            "title=Main",
            "-metadata:s:a:1",
            "language=fra",
            "-metadata:s:a:1",
            "title=Commentary",
            "-metadata:s:s:0",
            "language=eng",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def _streams(path: Path) -> list[tuple]:
    info = ffprobe_json(path, "-show_streams")
    return [
        (s["codec_type"], s["codec_name"], s.get("tags", {}).get("language"), s.get("tags", {}).get("title"))
        for s in info["streams"]
    ]


def _chapters(path: Path) -> list[tuple]:
    info = ffprobe_json(path, "-show_chapters")
    return [
        (round(float(c["start_time"]), 3), round(float(c["end_time"]), 3), c["tags"]["title"]) for c in info["chapters"]
    ]


def _subtitle_text(path: Path) -> str:
    return subprocess.run(
        [ffmpeg(), "-loglevel", "error", "-i", str(path), "-map", "0:s:0", "-f", "srt", "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def test_every_audio_track_subtitles_chapters_and_metadata_are_kept(client, tmp_path):
    src = _rich_clip(tmp_path)
    assert [s[:2] for s in _streams(src)] == [
        ("video", "h264"),
        ("audio", "aac"),
        ("audio", "mp3"),
        ("subtitle", "subrip"),
    ]
    chapters = [(0.0, 0.5, "Beach"), (0.5, 1.0, "Sunset")]
    assert _chapters(src) == chapters

    mkv = tmp_path / "rich_x2.mkv"
    report = client.upscale_video(src, mkv, MODEL, preset="ultrafast", progress=False)
    assert report.audio == "copied (aac), copied (mp3)" and report.subtitles == "copied (subrip)"
    assert report.chapters == 2 and report.frames == 10
    assert _streams(mkv)[1:] == _streams(src)[1:]  # the same tracks, languages and titles, in order
    assert _packets(mkv, "audio") == _packets(src, "audio")  # both tracks bit for bit
    assert _packets(mkv, "subtitles") == _packets(src, "subtitles")
    assert _chapters(mkv) == chapters
    assert ffprobe_json(mkv, "-show_format")["format"]["tags"]["title"] == "Holiday clip"

    # MP4 holds no SubRip: the text is converted to mov_text, the rest copied
    mp4 = tmp_path / "rich_x2.mp4"
    report = client.upscale_video(src, mp4, MODEL, preset="ultrafast", progress=False)
    assert report.subtitles == "converted (subrip -> mov_text)"
    # (MP4 keeps no track titles; its chapters come with a QuickTime chapter track, which ffprobe lists as data)
    assert [s[:3] for s in _streams(mp4) if s[0] != "data"] == [
        ("video", "h264", "und"),
        ("audio", "aac", "eng"),
        ("audio", "mp3", "fra"),
        ("subtitle", "mov_text", "eng"),
    ]
    assert _packets(mp4, "audio") == _packets(src, "audio")
    assert _subtitle_text(mp4) == _subtitle_text(src)
    assert _chapters(mp4) == chapters
    assert ffprobe_json(mp4, "-show_format")["format"]["tags"]["title"] == "Holiday clip"


def _luma10(path: Path) -> np.ndarray:
    """The luma plane of every frame as 10-bit codes as stored (limited range), decoded by the ffmpeg binary."""
    info = ffprobe_json(path, "-show_streams", "-select_streams", "v")["streams"][0]
    w, h = info["width"], info["height"]
    raw = subprocess.run(
        [ffmpeg(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    frames = np.frombuffer(raw, "<u2").reshape(-1, h * w * 3 // 2)  # Y, then the two chroma planes
    return frames[:, : h * w].reshape(-1, h, w).astype(np.float64)


def _banding(path: Path) -> dict:
    """Along the gradient (mean of the middle rows): distinct levels, largest step, RMS distance from a line."""
    y = _luma10(path)
    profile = y[:, y.shape[1] // 4 : 3 * y.shape[1] // 4, 8:-8].mean(axis=(0, 1))
    x = np.arange(profile.size)
    fit = np.polyval(np.polyfit(x, profile, 1), x)
    return {
        "levels": len(np.unique(np.round(profile))),
        "max_step": float(np.abs(np.diff(profile)).max()),
        "rms": float(np.sqrt(np.mean((profile - fit) ** 2))),
    }


def test_ten_bit_gradient_stays_ten_bit_without_banding(client, tmp_path):
    # 10-bit luma 400 + x over 64 columns: 64 codes, i.e. only 16 steps at 8 bits; BT.709 tags, limited range
    src = tmp_path / "gradient10.mkv"
    subprocess.run(
        [
            ffmpeg(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "nullsrc=size=64x48:rate=10,format=yuv420p10le,geq=lum='400+X':cb=512:cr=512",
            "-t",
            "0.3",
            "-c:v",
            "libx264",
            "-qp",
            "0",
            "-pix_fmt",
            "yuv420p10le",
            "-colorspace",
            "bt709",
            "-color_primaries",
            "bt709",
            "-color_trc",
            "bt709",
            "-color_range",
            "tv",
            str(src),
        ],
        check=True,
        timeout=120,
    )
    source = _banding(src)
    assert source["levels"] >= 44 and source["max_step"] <= 1.5, source

    ten = tmp_path / "gradient10_x2.mkv"  # the default for 10-bit input: 10-bit output
    report = client.upscale_video(src, ten, MODEL, preset="ultrafast", crf=6, progress=False)
    eight = tmp_path / "gradient8_x2.mkv"
    client.upscale_video(src, eight, MODEL, preset="ultrafast", crf=6, bit_depth=8, progress=False)

    stream = ffprobe_json(ten, "-show_streams", "-select_streams", "v")["streams"][0]
    assert report.pix_fmt == stream["pix_fmt"] == "yuv420p10le"
    assert (stream["color_space"], stream["color_transfer"], stream["color_primaries"], stream["color_range"]) == (
        "bt709",
        "bt709",
        "bt709",
        "tv",
    )
    smooth, banded = _banding(ten), _banding(eight)
    # the 8-bit output shows the 16 steps of 4 codes; the 10-bit one follows the gradient
    assert banded["max_step"] >= 3 and banded["rms"] > 0.8, banded
    assert smooth["levels"] >= 48 and smooth["max_step"] <= 2 and smooth["rms"] < 0.5, (smooth, banded)

    # where there is detail the network's picture is kept: a 10-bit photo comes out as its 8-bit run does
    photo = photo_clip(tmp_path / "photo10.mkv", seconds=0.3, extra=["-pix_fmt", "yuv420p10le"])
    client.upscale_video(photo, tmp_path / "photo10_x2.mkv", MODEL, preset="ultrafast", crf=6, progress=False)
    client.upscale_video(
        photo, tmp_path / "photo8_x2.mkv", MODEL, preset="ultrafast", crf=6, bit_depth=8, progress=False
    )
    a, b = decode_upright(tmp_path / "photo10_x2.mkv"), decode_upright(tmp_path / "photo8_x2.mkv")
    mse = np.mean([(x.astype(np.float64) - y) ** 2 for x, y in zip(a, b)])
    assert 10 * np.log10(255**2 / mse) > 35, mse


def test_colour_matrix_and_full_range_are_used_and_kept(client, tmp_path):
    tags = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "pc"]
    src = photo_clip(
        tmp_path / "full709.mp4", seconds=0.3, vf="scale=out_color_matrix=bt709:out_range=full", extra=tags
    )
    dst = tmp_path / "full709_x2.mp4"
    client.upscale_video(src, dst, MODEL, preset="ultrafast", crf=10, progress=False)
    stream = ffprobe_json(dst, "-show_streams", "-select_streams", "v")["streams"][0]
    assert (stream["color_space"], stream["color_transfer"], stream["color_primaries"], stream["color_range"]) == (
        "bt709",
        "bt709",
        "bt709",
        "pc",
    )
    ref, out = decode_upright(src), decode_upright(dst)  # RGB as ffmpeg converts it from the tags
    diff = np.mean([_shrink(o).mean(axis=(0, 1)) - r.mean(axis=(0, 1)) for o, r in zip(out, ref)], axis=0)
    assert np.abs(diff).max() < 3, diff  # per channel, 0..255: no shift of contrast or hue


class _Interrupt(KeyboardInterrupt):
    pass


def test_resume_after_an_interruption_equals_an_uninterrupted_run(client, tmp_path, monkeypatch):
    src = make_clip(tmp_path / "clip.mp4", seconds=3)  # 30 frames with sound
    opts = dict(preset="ultrafast", segment_frames=8, progress=False)
    whole = tmp_path / "whole.mp4"
    client.upscale_video(src, whole, MODEL, **opts)

    dst = tmp_path / "resumed.mp4"
    work = tmp_path / ".resumed.mp4.stylize-work"

    def stop_at_19(done, total):
        if done == 19:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        client.upscale_video(src, dst, MODEL, on_progress=stop_at_19, **opts)
    assert not dst.exists()  # nothing under the final name
    assert sorted(p.name for p in work.iterdir()) == ["job.json", "seg-000000.nut", "seg-000001.nut"]
    (work / "seg-000002.part.nut").write_bytes(b"half a segment a crash left")  # never trusted

    seen = []
    report = client.upscale_video(src, dst, MODEL, on_progress=lambda d, t: seen.append(d), **opts)
    assert report.resumed_frames == 16 and report.frames == 30 and report.requests == 14
    assert seen[0] == 17 and seen[-1] == 30
    assert "resumed: 16 frames" in report.summary()
    assert not work.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "resumed.mp4", "whole.mp4"]

    a, b = probe(whole), probe(dst)
    assert len(b["frames"]) == 30 and all(np.array_equal(x, y) for x, y in zip(a["frames"], b["frames"]))
    assert frame_times(dst) == frame_times(whole) == frame_times(src)
    assert _packets(dst, "video") == _packets(whole, "video")  # the same bitstream, packet for packet
    assert _packets(dst, "audio") == _packets(src, "audio")

    # a crash after the last segment, before the container is written: the rerun only muxes
    import stylize.sdk.video

    def crash(*args, **kwargs):
        raise _Interrupt

    again = tmp_path / "again.mp4"
    with monkeypatch.context() as m:
        m.setattr(stylize.sdk.video, "remux", crash)
        with pytest.raises(_Interrupt):
            client.upscale_video(src, again, MODEL, **opts)
    report = client.upscale_video(src, again, MODEL, **opts)
    assert report.resumed_frames == 30 and report.frames == 30 and report.requests == 0
    assert _packets(again, "video") == _packets(whole, "video")
    again.unlink()

    # another job (here: another quality) never reuses the segments
    with pytest.raises(_Interrupt):
        client.upscale_video(src, dst.with_name("other.mp4"), MODEL, on_progress=stop_at_19, **opts)
    report = client.upscale_video(src, dst.with_name("other.mp4"), MODEL, **{**opts, "crf": 30})
    assert report.resumed_frames == 0 and report.requests == 30


def test_resume_with_overlapping_windows_equals_an_uninterrupted_run(client, tmp_path):
    """BasicVSR: a window reaching back into finished segments is sent again; only its new frames are written."""
    if "basicvsr_x4" not in {m.id for m in client.models()}:
        pytest.fail("basicvsr_x4 is not in the test repository: every model must be (the suite does not skip one)")
    src = make_clip(tmp_path / "clip.mp4", size="32x32", seconds=1.2)  # 12 frames; windows of 7: 0-6, 3-9, 5-11
    opts = dict(preset="ultrafast", segment_frames=3, progress=False)
    whole = tmp_path / "whole.mp4"
    assert client.upscale_video(src, whole, "basicvsr_x4", **opts).requests == 3

    def stop_at_7(done, total):
        if done == 7:
            raise _Interrupt

    dst = tmp_path / "resumed.mp4"
    with pytest.raises(_Interrupt):
        client.upscale_video(src, dst, "basicvsr_x4", on_progress=stop_at_7, **opts)
    report = client.upscale_video(src, dst, "basicvsr_x4", **opts)
    # frames 0-5 were kept; the window 3-9 (keeping 5-7) and 5-11 are sent again, frame 5 dropped from the first
    assert report.resumed_frames == 6 and report.requests == 2 and report.frames == 12
    a, b = probe(whole), probe(dst)
    assert all(np.array_equal(x, y) for x, y in zip(a["frames"], b["frames"])) and len(b["frames"]) == 12
    assert _packets(dst, "video") == _packets(whole, "video")


@pytest.mark.parametrize(
    "codec, suffix, bit_depth, pix_fmt",
    [
        ("h265", ".mp4", 10, "yuv420p10le"),
        ("vp9", ".webm", 8, "yuv420p"),
        ("av1", ".mkv", 10, "yuv420p10le"),
    ],
)
def test_output_codec_and_bit_depth(client, tmp_path, codec, suffix, bit_depth, pix_fmt):
    src = make_clip(tmp_path / "clip.mp4", seconds=0.3)
    dst = tmp_path / f"out{suffix}"
    report = client.upscale_video(src, dst, MODEL, codec=codec, bit_depth=bit_depth, preset="ultrafast", progress=False)
    stream = ffprobe_json(dst, "-show_streams", "-select_streams", "v")["streams"][0]
    assert stream["codec_name"] == {"h265": "hevc"}.get(codec, codec) and stream["pix_fmt"] == pix_fmt
    assert report.codec == codec and len(probe(dst)["frames"]) == 3
    assert probe(dst)["audio"] == (["opus"] if suffix == ".webm" else ["aac"])


def test_basicvsr_window_tiled_in_space_agrees_with_the_whole_window(client, record_property):
    """A window cut into 4 overlapping tiles (every frame alike, feathered seams) against the same window whole."""
    if "basicvsr_x4" not in {m.id for m in client.models()}:
        pytest.fail("basicvsr_x4 is not in the test repository: every model must be (the suite does not skip one)")
    from stylize.engine.photos import photo_path
    from stylize.sdk.video import tile_window

    photo = np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB"))[100:300, 100:300]
    small = np.asarray(Image.fromarray(photo).resize((76, 64), Image.Resampling.BICUBIC))
    window = np.stack([small[:, 2 * t : 2 * t + 64] for t in range(7)])  # a pan of 2 px per frame
    raw = client.raw_model("basicvsr_x4")
    whole = client.infer_frames(window, "basicvsr_x4")
    # 64 px with 16 overlap: two 40 px tiles per side (the default, 32, needs tiles over 64 px: slower on CPU)
    tiled = tile_window(
        client, window, "basicvsr_x4", version=None, scale=raw.scale, multiple=raw.size_multiple, tile=48, overlap=16
    )
    mse = np.mean((whole.astype(np.float64) - tiled) ** 2)
    psnr = 10 * np.log10(255**2 / mse) if mse else float("inf")
    record_property("tiled_vs_whole_psnr_db", round(psnr, 2))
    print(f"basicvsr_x4 7x64x64 window, 4 tiles of 40 px (16 overlap) vs whole: {psnr:.2f} dB")
    assert tiled.shape == whole.shape == (7, 256, 256, 3)
    assert psnr > 35, psnr
