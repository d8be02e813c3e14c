"""Tiling and feathered blending: plans, weights, and tiled == untiled for a network with a local receptive field."""

import numpy as np
import pytest
from PIL import Image
from stylize.contract.tiling import edge_weights, plan_tiles, run_tiled
from stylize.engine.photos import photo_path

pytestmark = pytest.mark.unit


def local_sr(batch: np.ndarray, scale: int = 2) -> np.ndarray:
    """A stand-in x``scale`` network with a 5x5 receptive field: box blur (edge padded), then nearest upscale."""
    x = batch.astype(np.float32)
    p = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    h, w = batch.shape[1:3]
    blur = sum(p[:, i : i + h, j : j + w] for i in range(5) for j in range(5)) / 25.0
    up = np.repeat(np.repeat(blur, scale, axis=1), scale, axis=2)
    return np.clip(np.rint(up), 0, 255).astype(np.uint8)


def photo(h: int, w: int) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB"))[:h, :w])


@pytest.mark.parametrize("length", [129, 200, 300, 512, 1000, 2048])
def test_plan_covers_each_side_with_the_fewest_overlapping_tiles(length):
    # the layout along one axis (batch=0: by sides only; 129 x 77 px would otherwise fit one 128² call)
    plan = plan_tiles(length, 77, tile=128, overlap=16, batch=0)
    assert plan.tile_h <= 128 and plan.tile_w == 77 and plan.xs == (0,)
    assert plan.ys[0] == 0 and plan.ys[-1] + plan.tile_h == length
    assert all(a + plan.tile_h - b >= 16 for a, b in zip(plan.ys, plan.ys[1:]))  # neighbours overlap by >= 16
    assert len(plan.ys) == -(-(length - 16) // (128 - 16))  # no more tiles than needed
    assert plan.tile_h * len(plan.ys) <= length + len(plan.ys) * 16 + len(plan.ys)  # each tile as small as allowed


def test_plan_details():
    assert plan_tiles(100, 100, tile=128, overlap=16).count == 1
    assert plan_tiles(512, 512, tile=384, overlap=16).tile_h == 264  # not two 384 tiles
    aligned = plan_tiles(301, 301, tile=128, overlap=16, multiple=4)
    assert all(y % 4 == 0 for y in aligned.ys[:-1]) and aligned.tile_h % 4 == 0
    with pytest.raises(ValueError):
        plan_tiles(100, 100, tile=32, overlap=16)


def test_edge_weights_fade_only_towards_neighbours():
    w = edge_weights(64, 32, start_free=True, end_free=False)
    assert w[0] == 1 and w[31] == 1 and w[-1] < 1e-3 and np.all(np.diff(w) <= 0)
    both = edge_weights(64, 32, start_free=False, end_free=False)
    assert both[0] < 1e-3 and both[32] == 1 and np.all(both > 0)


def test_weights_sum_to_one_so_a_constant_image_stays_constant():
    frame = np.full((150, 170, 3), 77, np.uint8)
    out, tiles = run_tiled(frame, run=lambda b: local_sr(b, 2), scale=2, tile=64, overlap=12, batch=3)
    assert tiles > 4 and out.shape == (300, 340, 3) and np.all(out == 77)


@pytest.mark.parametrize("scale, tile, overlap, batch", [(2, 64, 12, 3), (4, 48, 8, 1), (1, 40, 8, 4)])
def test_tiled_equals_untiled_on_a_real_photo(scale, tile, overlap, batch):
    frame = photo(150, 131)
    calls = []

    def run(b):
        calls.append(b.shape)
        return local_sr(b, scale)

    untiled = local_sr(frame[None], scale)[0]
    out, tiles = run_tiled(frame, run=run, scale=scale, tile=tile, overlap=overlap, batch=batch)
    assert out.shape == untiled.shape and tiles > 1
    assert np.abs(out.astype(int) - untiled).max() <= 1
    # tiles of one image go out in batches of equal-size tiles, never more than `batch`
    assert len({s[1:] for s in calls}) == 1 and max(s[0] for s in calls) <= batch
    assert sum(s[0] for s in calls) == tiles


def test_one_tile_is_one_call_without_blending():
    frame = photo(50, 60)
    out, tiles = run_tiled(frame, run=lambda b: local_sr(b, 2), scale=2, tile=64, overlap=8, batch=2)
    assert tiles == 1 and np.array_equal(out, local_sr(frame[None], 2)[0])


def test_a_network_returning_the_wrong_shape_is_an_error():
    with pytest.raises(RuntimeError, match="returned"):
        run_tiled(photo(100, 100), run=lambda b: local_sr(b, 2), scale=4, tile=48, overlap=8, batch=2)


def test_an_image_within_one_calls_pixel_budget_is_not_tiled():
    # 256² is larger than a 192 tile but has fewer pixels than the two 192² tiles one call may carry
    assert plan_tiles(256, 256, tile=192, overlap=32, batch=2).count == 1
    assert plan_tiles(256, 256, tile=192, overlap=32, batch=1).count == 4  # one tile per call: 4 x 144²
    assert plan_tiles(32, 2000, tile=192, overlap=32, batch=2).count == 1  # the budget is pixels, not a side
    assert plan_tiles(272, 272, tile=192, overlap=32, batch=2).count > 1  # 73 984 > 2 x 192²
    frame = photo(120, 150)
    calls = []

    def run(b):
        calls.append(b.shape)
        return local_sr(b, 2)

    out, tiles = run_tiled(frame, run=run, scale=2, tile=100, overlap=16, batch=2)
    assert tiles == 1 and calls == [(1, 120, 150, 3)] and np.array_equal(out, local_sr(frame[None], 2)[0])


def test_tiles_per_call_keeps_the_budget_and_the_result():
    """per_call=1 (CPU): same plan (the budget is still batch tiles' pixels), one tile per call, same output."""
    frame = photo(150, 131)
    calls = []

    def run(b):
        calls.append(b.shape[0])
        return local_sr(b, 2)

    batched, n = run_tiled(frame, run=lambda b: local_sr(b, 2), scale=2, tile=64, overlap=12, batch=3)
    single, m = run_tiled(frame, run=run, scale=2, tile=64, overlap=12, batch=3, per_call=1)
    assert n == m > 1 and calls == [1] * n and np.array_equal(batched, single)
    calls.clear()
    run_tiled(photo(80, 90), run=run, scale=2, tile=64, overlap=12, batch=2, per_call=1)
    assert calls == [1]  # 80 x 90 is within 2 x 64² pixels: one call, untiled, whatever per_call says
