"""The video benchmark's hd part: what it counts on the client, and how docs/video.md states measured vs projected."""

from __future__ import annotations

import json

import numpy as np
from stylize.loadtest.experiments import video_bench


class _Fake:
    stats = "the client's own"

    def infer_frames(self, frames, model=None, **kwargs):
        return np.repeat(np.repeat(frames, 4, axis=-3), 4, axis=-2)


def test_counting_client_times_each_request_and_passes_the_rest_through():
    c = video_bench.CountingClient(_Fake())
    y = c.infer_frames(np.zeros((7, 8, 6, 3), np.uint8), "basicvsr_x4", version=None)
    assert y.shape == (7, 32, 24, 3)
    assert [s for s, _ in c.requests] == [(7, 8, 6, 3)] and c.requests[0][1] >= 0
    assert c.stats == "the client's own"


def _memory() -> dict:
    return {
        "machine": {"when": "then"},
        "window": 7,
        "side": 256,
        "seconds": 50.0,
        "idle_rss_mib": 1000,
        "peak_rss_mib": 3900,
        "idle_pss_mib": 900,
        "peak_pss_mib": 3800,
        "projection": {
            "480p": {"tiles_per_frame": 8, "tile": [256, 238], "projected_window_s": 400.0, "projected_fps": 0.0075}
        },
        "how": "one tile",
    }


def _hd_row() -> dict:
    return {
        "input": "480p",
        "size_in": [854, 480],
        "size_out": [3416, 1920],
        "frames": 7,
        "tiles_per_frame": 8,
        "tile_shapes": [[7, 256, 238, 3]],
        "tile_s_p50": 51.0,
        "tile_s_min": 50.0,
        "tile_s_max": 60.0,
        "window_s": 410.0,
        "fps_kept": 0.0073,
        "clip_seconds": 415.0,
        "idle_rss_mib": 1001,
        "peak_rss_mib": 3950,
        "idle_pss_mib": 901,
        "peak_pss_mib": 3850,
        "projected": {"window_s": 400.0, "fps": 0.0075, "peak_rss_mib": 3900},
    }


def test_render_states_the_measurement_next_to_the_projection(tmp_path):
    (tmp_path / "memory.json").write_text(json.dumps(_memory()))
    without = video_bench.render(tmp_path)
    assert "not on a 480p clip" in without and "measured:" not in without
    (tmp_path / "hd.json").write_text(json.dumps({"machine": {"when": "now"}, "rows": [_hd_row()], "how": "x"}))
    text = video_bench.render(tmp_path)
    assert "480p and 720p, tiled: measured" in text
    assert "480p, **projection**: 8 tiles" in text and "measured: 410 s, 0.0073 frames/s" in text
    row = next(line for line in text.splitlines() if line.startswith("| 480p 854x480"))
    assert "**410** / 400" in row and "**0.0073** / 0.0075" in row and "1001 -> **3950**" in row
    assert "8 (7x256x238)" in row
