"""stylize.sdk.video_live's arithmetic and output choice (no server)."""

from __future__ import annotations

import os

import pytest
from stylize.contract.errors import InvalidInput
from stylize.sdk.video_live import LiveReport, _concurrent_seconds, _merged, _output_format, _union_seconds


def test_union_and_concurrency_of_busy_periods():
    assert _union_seconds([(0, 1), (0.5, 2), (3, 4)]) == pytest.approx(3.0)
    assert _merged([(0.5, 2), (0, 1), (3, 4)]) == [(0, 2), (3, 4)]
    stages = [[(0, 1)], [(0.5, 2)], [(2.5, 2.6)]]
    assert _concurrent_seconds(stages) == pytest.approx(0.5)
    assert _concurrent_seconds([[(0, 1)], [(1, 2)]]) == 0


def test_report_figures_and_target():
    r = LiveReport(
        src="in",
        dst="out.ts",
        model="m",
        policy="block",
        queue=8,
        concurrency=2,
        fps_in=10.0,
        frames_out=3,
        latency_ms=[50.0, 60.0, 70.0],
        frames_per_request=[1, 1, 1],
        intervals={"decode": [(0.1, 0.11)], "network": [(0.1, 0.2), (0.15, 0.3), (0.3, 0.4)], "encode": [(0.3, 0.31)]},
        seconds=1.0,
    )
    f = r.figures()
    assert f["latency_ms"]["p50"] == 60 and f["latency_ms"]["max"] == 70
    assert f["compute_per_frame_ms"] == pytest.approx(100)  # 0.3 s of network time (overlaps once) / 3 frames
    assert f["target_ms"] == pytest.approx(300) and f["p95_within_target"]
    assert r.stages()["network"]["busy_s"] == pytest.approx(0.3)


def test_output_format(tmp_path):
    assert _output_format("-")[0] == "mpegts"
    assert _output_format(str(tmp_path / "a.ts"))[0] == "mpegts"
    assert "frag_every_frame" in _output_format(str(tmp_path / "a.mp4"))[1]["movflags"]
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    assert _output_format(str(fifo))[0] == "mpegts"
    with pytest.raises(InvalidInput):
        _output_format(str(tmp_path / "a.avi"))
