"""stylize.sdk.video_container without a server: the 10-bit flat-area rule, the work folder of resume, the joined
stream's timestamps, the ffmpeg stream mapping."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from stylize.contract.errors import InvalidInput
from stylize.sdk.video_container import (
    Job,
    SegmentStore,
    _upscale_bilinear,
    flat_areas_from_source,
    join_segments,
    output_codec,
)

pytestmark = pytest.mark.unit


def _gradient16(h=24, w=64, lo=25000, per_px=70):
    row = lo + per_px * np.arange(w)
    return np.repeat(np.repeat(row[None, :, None], h, axis=0), 3, axis=2).astype(np.uint16)


def test_a_gradient_comes_back_smooth_from_its_8_bit_staircase():
    src16 = _gradient16()
    src8 = ((src16.astype(np.uint32) + 128) // 257).astype(np.uint8)
    net = np.repeat(np.repeat(src8, 2, axis=0), 2, axis=1)  # a network returning the staircase it was given
    out = flat_areas_from_source(net, src16, 2)
    steps = np.abs(np.diff(out[12, 8:-8, 0].astype(np.int64)))
    staircase = np.abs(np.diff(net[12, 8:-8, 0].astype(np.int64) * 257))
    assert staircase.max() == 257 and steps.max() <= 40  # 1/1000 of full scale instead of a 1/255 jump


def test_edges_keep_the_network_output():
    src16 = np.zeros((24, 64, 3), np.uint16)
    src16[:, 32:] = 50000  # a hard edge: nothing flat near it
    src8 = ((src16.astype(np.uint32) + 128) // 257).astype(np.uint8)
    net = np.repeat(np.repeat(src8, 2, axis=0), 2, axis=1)
    net[:, 60:68] = 123  # what the network made of the edge
    out = flat_areas_from_source(net, src16, 2)
    # within 6 output pixels of the edge (source column 32: output 64) the network output is untouched
    assert np.array_equal(out[:, 58:70], net[:, 58:70].astype(np.uint16) * 257)
    assert abs(int(out[12, 100, 0]) - 50000) <= 1  # far from it, flat: the source at its own precision


def test_bilinear_upscale_keeps_a_ramp_linear():
    a = np.arange(8, dtype=np.float32)[None, :, None].repeat(2, 0)
    up = _upscale_bilinear(a, 2, 4, 16)[0, 2:-2, 0]
    assert np.allclose(np.diff(up), 0.5)


def _job(**kw) -> Job:
    base = Job(
        source="/x.mp4",
        source_size=1,
        source_mtime_ns=2,
        model="m",
        version="",
        codec="h264",
        pix_fmt="yuv420p",
        crf=18,
        preset="medium",
        segment_frames=10,
        batch=1,
        window_margin=None,
    )
    return replace(base, **kw)


def test_the_work_folder_keeps_finished_segments_of_the_same_job_only(tmp_path):
    dst = tmp_path / "out.mp4"
    store = SegmentStore(dst, _job())
    assert store.open(resume=True) == 0 and store.dir == tmp_path / ".out.mp4.stylize-work"
    for k in (0, 1, 3):  # 2 is missing: 3 is not trusted
        store.path(k).write_bytes(b"x")
    store.part(4).write_bytes(b"half")
    assert SegmentStore(dst, _job()).open(resume=True) == 2
    assert sorted(p.name for p in store.dir.iterdir()) == ["job.json", "seg-000000.nut", "seg-000001.nut"]
    assert SegmentStore(dst, _job(crf=20)).open(resume=True) == 0  # another job: discarded
    assert sorted(p.name for p in store.dir.iterdir()) == ["job.json"]
    store.path(0).write_bytes(b"x")
    assert SegmentStore(dst, _job(crf=20)).open(resume=False) == 0


def test_output_codec_refusals():
    import av

    with pytest.raises(InvalidInput, match="H.264 into .webm"):
        output_codec(av, "h264", 8, ".webm")
    with pytest.raises(InvalidInput, match="codec 'mpeg2'"):
        output_codec(av, "mpeg2", 8, ".mp4")
    with pytest.raises(InvalidInput, match="bit depth 12"):
        output_codec(av, "h265", 12, ".mkv")
    assert output_codec(av, "h264", 10, ".mp4")[1] == "yuv420p10le"


def test_joined_segments_keep_each_frame_time_and_decode_in_order(tmp_path):
    import av

    tb = Fraction(1, 90000)
    times = [0, 3000, 9000, 10000, 18000, 30000, 31000, 40000, 52000]  # irregular, in 90 kHz ticks
    segments = []
    for k, chunk in enumerate((times[:4], times[4:8], times[8:])):  # fresh encoders: B-frame delay each time
        path = tmp_path / f"seg-{k}.nut"
        with av.open(str(path), "w", format="nut", container_options={"avoid_negative_ts": "disabled"}) as o:
            s = o.add_stream("libx264", rate=10, options={"preset": "medium", "bframes": "3"})
            s.width, s.height, s.pix_fmt, s.time_base = 32, 32, "yuv420p", tb
            s.codec_context.time_base = tb
            for t in chunk:
                f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), t % 251, np.uint8), format="rgb24")
                f.pts, f.time_base = t, tb
                for p in s.encode(f):
                    o.mux(p)
            for p in s.encode(None):
                o.mux(p)
        segments.append(path)
    out = tmp_path / "video.mp4"
    assert join_segments(av, segments, out, last_duration=Fraction(1, 10)) == len(times)
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        got = [f.pts * f.time_base for f in c.decode(v)]
    assert got == [t * tb for t in times]


def test_no_segments_is_an_error(tmp_path):
    import av
    from stylize.sdk.video_container import VideoError

    with pytest.raises(VideoError):
        join_segments(av, [], tmp_path / "x.mp4")


def test_a_window_is_tiled_like_a_frame_every_frame_cut_alike():
    from stylize.contract.tiling import run_tiled

    rng = np.random.default_rng(0)
    window = rng.integers(0, 256, (5, 40, 56, 3), dtype=np.uint8)

    def net(batch):  # a local stand-in for a windowed x2 network: nearest upscale, each frame mixed with the next
        mixed = ((batch.astype(np.uint16) + np.roll(batch, -1, axis=1)) // 2).astype(np.uint8)
        return mixed.repeat(2, axis=-3).repeat(2, axis=-2)

    calls = []
    tiled, count = run_tiled(
        window, run=lambda t: calls.append(t.shape) or net(t), scale=2, tile=24, overlap=8, batch=1
    )
    assert count > 1 and all(shape[:2] == (1, 5) for shape in calls)  # whole windows of smaller frames
    assert np.array_equal(tiled, net(window[None])[0])  # a local network: no seam anywhere


def test_outscale_of_a_high_bit_depth_frame_stays_16_bit():
    """--outscale on 10-bit input: the 16-bit picture (flat areas from the source) is what is resized."""
    import av
    from stylize.engine.imaging import resize
    from stylize.engine.photos import real_photo_crop
    from stylize.sdk.video import outscaled
    from stylize.sdk.video_container import flat_areas_from_source

    source8 = real_photo_crop(12, 16)
    source16 = source8.astype(np.uint16) * 257
    net = np.repeat(np.repeat(source8, 2, axis=0), 2, axis=1)  # a stand-in x2 picture
    out = outscaled(net, source16, 2, (18, 24))
    assert out.dtype == np.uint16 and out.shape == (18, 24, 3)
    expected = np.clip(np.rint(resize(flat_areas_from_source(net, source16, 2), (18, 24))), 0, 65535)
    np.testing.assert_array_equal(out, expected)
    assert outscaled(net, None, 2, (18, 24)).dtype == np.uint8
    frame = av.VideoFrame.from_ndarray(out, format="rgb48le")  # what Picture.frame_from makes of it
    assert (frame.width, frame.height) == (24, 18)
