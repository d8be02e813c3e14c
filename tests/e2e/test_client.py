"""The SDK against the real server (the session `server` fixture): one-liners for every image model and input kind,
infer_many order and memory bound, raw frames, errors, version pinning, listing, health, asyncio, metrics."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import urllib.request
import zlib

import numpy as np
import pytest
from PIL import Image
from stylize.contract.descriptors import MODELS, REGISTRY
from stylize.contract.errors import InvalidInput, ModelNotFound, StylizeError, Timeout
from stylize.engine.photos import real_photo_crop
from stylize.sdk.aio import AsyncStylizeClient
from stylize.sdk.client import StylizeClient
from stylize.sdk.request import image_format
from stylize.sdk.transport import RetryPolicy

pytestmark = pytest.mark.e2e

IMAGE_MODELS = [d.id for d in MODELS if not d.is_video_window]
SIDE = {"esrgan_x4": 32}  # the 23-block RRDBNet is slow on 2 cores: smaller crop
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png"]


@pytest.fixture(scope="module")
def client(server):
    # with the admin key of the session's server: listing reads the weights status from the model configs
    with StylizeClient(url=server.grpc_url, retry=RetryPolicy(deadline=30), admin_key=server.admin_key) as c:
        yield c


@pytest.fixture(scope="module")
def served(client):
    return {m.id: m for m in client.models()}


def _need(served, model):
    if model not in served:
        pytest.fail(f"{model} is not in the test repository: every model must be (the suite does not skip one)")
    return served[model]


def _similar_to_input(out: np.ndarray, src: np.ndarray, scale: int) -> float:
    """Mean absolute difference between the input and the output shrunk back (box filter)."""
    small = np.asarray(Image.fromarray(out).reduce(scale)) if scale > 1 else out
    return float(np.abs(small.astype(np.int16) - src.astype(np.int16)).mean())


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_one_liner_for_array_pil_and_path(client, served, model, tmp_path):
    info = _need(served, model)
    side = SIDE.get(model, 48)
    src = real_photo_crop(side, side)
    scale = REGISTRY[model].scale

    out = client.infer(src, model)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (side * scale, side * scale, 3)
    assert out.std() > 1  # a picture, not a constant
    if info.task == "sr" and info.weights == "real":
        assert _similar_to_input(out, src, scale) < 15  # real super-resolution keeps the picture

    pil = client.infer(Image.fromarray(src), model)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (side * scale, side * scale)
    np.testing.assert_array_equal(np.asarray(pil), out)  # same pixels in: same pixels out

    path = tmp_path / "in.png"
    Image.fromarray(src).save(path)
    data = client.infer(path, model)
    assert isinstance(data, bytes) and image_format(data) == "PNG"
    with Image.open(io.BytesIO(data)) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), out)
    assert client.infer(path.read_bytes(), model) == data


def test_infer_many_over_a_folder_of_real_photos_in_order(client, served, tmp_path):
    model = "animevideo_x2"
    _need(served, model)
    rng = np.random.default_rng(0)
    paths, crops = [], []
    for i, name in enumerate(PHOTOS * 2):
        crop = real_photo_crop(32, 40, name=name, offset=(int(rng.integers(-40, 40)), int(rng.integers(-40, 40))))
        p = tmp_path / f"{i:02d}_{name.split('.')[0]}.png"
        Image.fromarray(crop).save(p)
        paths.append(p)
        crops.append(crop)
    results = list(client.infer_many(paths, model, concurrency=4))
    assert len(results) == len(paths)
    for i, data in enumerate(results):
        with Image.open(io.BytesIO(data)) as im:
            out = np.asarray(im.convert("RGB"))
        assert out.shape == (64, 80, 3)
        errors = [_similar_to_input(out, c, 2) for c in crops]
        assert int(np.argmin(errors)) == i, f"result {i} belongs to input {int(np.argmin(errors))}"
    # arrays in, arrays out, same order; and identical to one-by-one calls
    arrays = list(client.infer_many(crops[:4], model, concurrency=4))
    for crop, out in zip(crops[:4], arrays):
        np.testing.assert_array_equal(out, client.infer(crop, model))


def test_infer_many_pulls_lazily_with_bounded_memory(client, served):
    model = "animevideo_x2"
    _need(served, model)
    pulled = []

    def gen():
        for i in range(12):
            pulled.append(i)
            yield real_photo_crop(16, 16, offset=(i, i))

    it = client.infer_many(gen(), model, concurrency=3)
    first = next(it)
    assert first.shape == (32, 32, 3)
    assert len(pulled) <= 3  # never more than `concurrency` inputs held ahead of the consumer
    assert len(list(it)) == 11


def test_infer_many_reports_failures_in_place(client, served):
    model = "animevideo_x2"
    _need(served, model)
    good = real_photo_crop(16, 16)
    items = [good, b"not an image", good]
    out = list(client.infer_many(items, model, concurrency=2, return_exceptions=True))
    assert isinstance(out[1], InvalidInput) and "not a recognised image" in out[1].reason
    assert out[0].shape == out[2].shape == (32, 32, 3)
    with pytest.raises(InvalidInput):
        list(client.infer_many(items, model, concurrency=2))


def test_errors_are_typed(client, served):
    _need(served, "animevideo_x2")
    with pytest.raises(ModelNotFound):
        client.infer(real_photo_crop(16, 16), "no_such_model")
    with pytest.raises(InvalidInput) as e:
        client.infer(b"\x89PNG\r\n\x1a\n truncated", "animevideo_x2")
    assert e.value.status == "INVALID_ARGUMENT" and e.value.reason
    # a version the server does not serve: the client's mistake, naming the versions it can pin
    with pytest.raises(InvalidInput, match=r"version 999 of animevideo_x2_net is not served \(served versions: "):
        client.infer(real_photo_crop(16, 16), "animevideo_x2", version=999)


def test_timeout(server, served):
    _need(served, "animevideo_x2")
    with StylizeClient(url=server.grpc_url, timeout=1e-4, retry=RetryPolicy(attempts=1)) as c:
        with pytest.raises(Timeout):
            c.infer(real_photo_crop(48, 48), "animevideo_x2")


def test_options(client, served):
    _need(served, "animevideo_x2")
    src = real_photo_crop(16, 16)
    data = client.infer(_png(src), "animevideo_x2", output_format="JPEG", quality=90)
    assert image_format(data) == "JPEG"
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (32, 32)
    assert client.infer(src, "animevideo_x2", outscale=1.0).shape == (16, 16, 3)  # the server resizes
    assert image_format(client.infer(_png(src), "animevideo_x2", output_format="webp")) == "WEBP"
    with pytest.raises(InvalidInput, match="does not apply"):
        client.infer(src, "animevideo_x2", max_side=8)
    if "animeganv2" in served:  # a model with a configured max_side: the network sees at most 16 px
        assert client.infer(real_photo_crop(48, 48), "animeganv2", max_side=16).shape == (48, 48, 3)


def test_gray_and_alpha_come_back_in_the_layout_given(client, served):
    _need(served, "animevideo_x2")
    rgb = real_photo_crop(16, 20)
    gray = rgb.mean(axis=2).astype(np.uint8)
    assert client.infer(gray, "animevideo_x2").shape == (32, 40)
    assert client.infer(gray[..., None], "animevideo_x2").shape == (32, 40, 1)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    out = client.infer(rgba, "animevideo_x2")
    assert out.shape == (32, 40, 4) and abs(int(out[..., 3].mean()) - 200) <= 2
    assert client.infer(Image.fromarray(rgba), "animevideo_x2").mode == "RGBA"


def test_options_are_right_with_the_response_cache_on(model_repository, tmp_path):
    """The image ensembles enable Triton's response cache, keyed on inputs only: the SDK sends options as inputs,
    so the same image with other options is not answered from the cache."""
    from stylize.server.launcher import start_local

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in REGISTRY["animevideo_x2"].triton_models:
        (repo / name).symlink_to((model_repository / name).resolve(), target_is_directory=True)
    data = _png(real_photo_crop(16, 16))
    with start_local(repo, cache_size=16 * 1024 * 1024) as server, StylizeClient(url=server.grpc_url) as c:
        first = c.infer(data, "animevideo_x2", output_format="PNG")
        assert c.infer(data, "animevideo_x2", output_format="PNG") == first
        assert image_format(c.infer(data, "animevideo_x2", output_format="JPEG")) == "JPEG"
        assert image_format(c.infer(data, "animevideo_x2", output_format="WEBP")) == "WEBP"
        small = c.infer(data, "animevideo_x2", output_format="PNG", outscale=1.0)
        with Image.open(io.BytesIO(small)) as im:
            assert im.size == (16, 16)
        step = REGISTRY["animevideo_x2"].cached_model  # the cache is on the nested ensemble, behind request_check
        deadline = time.monotonic() + 15  # Triton refreshes its metrics every couple of seconds, not per request
        while True:
            with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
                metrics = r.read().decode()
            hits = [
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("nv_cache_num_hits_per_model{") and f'model="{step}"' in line
            ]
            if (hits and hits[0] >= 1) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert hits and hits[0] >= 1  # the cache was on and answered the repeated request


def test_compression(server, served):
    _need(served, "animevideo_x2")
    src = real_photo_crop(24, 24)
    with StylizeClient(url=server.grpc_url, compression="gzip") as c:
        out = c.infer(src, "animevideo_x2")
        frames = c.infer_frames(src, "animevideo_x2")
    assert out.shape == frames.shape == (48, 48, 3)


def _png(arr: np.ndarray, extra_chunk: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "PNG")
    data = out.getvalue()
    if extra_chunk:  # a private ancillary chunk before IEND: decoders skip it, the message grows
        body = b"stZq" + bytes(extra_chunk)
        chunk = struct.pack(">I", extra_chunk) + body + struct.pack(">I", zlib.crc32(body))
        data = data[:-12] + chunk + data[-12:]
    return data


def test_messages_larger_than_grpcs_4mb_default(client, served):
    _need(served, "animevideo_x2")
    src = real_photo_crop(16, 16)
    big = _png(src, extra_chunk=6 * 1024 * 1024)
    assert len(big) > 6 * 1024 * 1024
    out = client.infer(big, "animevideo_x2")  # 6 MiB request
    with Image.open(io.BytesIO(out)) as im:
        assert im.size == (32, 32)
    # and a response above 4 MB: 288x320 through a x4 network is 1152x1280x3 = 4.4 MB of raw frame
    model = "animevideo_x4" if "animevideo_x4" in served else "animevideo_x2"
    s = REGISTRY[model].scale
    h, w = 4608 // (s * 4), 5120 // (s * 4)
    frame = np.ascontiguousarray(np.tile(real_photo_crop(64, 64), (h // 64 + 1, w // 64 + 1, 1))[:h, :w])
    up = client.infer_frames(frame, model)
    assert up.shape == (h * s, w * s, 3) and up.nbytes > 4 * 1024 * 1024


def test_raw_frames_match_the_encoded_path(client, served):
    for model in ("animevideo_x2", "animeganv2"):
        if model not in served:
            continue
        src = real_photo_crop(30, 42)  # not a multiple of 4: padded and cropped back on both paths
        via_png = client.infer(src, model)
        raw = client.infer_frames(src, model)
        np.testing.assert_array_equal(raw, via_png)
        batch = client.infer_frames(np.stack([src, src[::-1]]), model)
        np.testing.assert_array_equal(batch[0], raw)
        assert batch.shape == (2, *raw.shape)


def test_raw_frames_tile_like_the_image_ensemble(client, served):
    _need(served, "animevideo_x2")
    src = np.ascontiguousarray(np.tile(real_photo_crop(48, 60), (2, 2, 1))[:90, :110])
    tiled = client.infer_frames(src, "animevideo_x2", tile=64)
    np.testing.assert_array_equal(tiled, client.infer(src, "animevideo_x2", tile_size=64))
    assert tiled.shape == (180, 220, 3)
    # the served network runs on CPU instances: the client sends one tile per request, as the image step does
    assert client.raw_model("animevideo_x2").tiles_per_call == 1


def test_version_pinning_on_the_network(client, served):
    info = _need(served, "animevideo_x2")
    assert info.versions, "the network has at least one ready version"
    src = real_photo_crop(16, 16)
    newest = client.infer_frames(src, "animevideo_x2")
    pinned = client.infer_frames(src, "animevideo_x2", version=info.versions[-1])
    np.testing.assert_array_equal(newest, pinned)
    with pytest.raises(ModelNotFound):
        client.infer_frames(src, "animevideo_x2", version=max(info.versions) + 100)


def test_models_listing(served):
    assert served, "the test repository serves at least one model"
    for info in served.values():
        desc = REGISTRY[info.id.removesuffix("_int8")]  # an INT8 variant is listed under its own name
        assert (info.task, info.scale) == (desc.task, desc.scale)
        assert info.weights in ("real", "untrained")
        assert info.ready and info.versions and all(v >= 1 for v in info.versions)
        assert info.license == desc.weights.license


def test_health(client):
    h = client.health()
    assert h.ok and h.live and h.ready and h.error is None
    assert h.server_version and h.models and all(s == "READY" for s in h.models.values())


def test_async_client_same_surface(server, served):
    _need(served, "animevideo_x2")
    crops = [real_photo_crop(16, 20, offset=(i * 7, i * 5)) for i in range(6)]

    async def main():
        async with AsyncStylizeClient(url=server.grpc_url, model="animevideo_x2") as c:
            one = await c.infer(crops[0])
            many = [r async for r in c.infer_many(crops, concurrency=4)]
            frames = await c.infer_frames(crops[1])
            tiled = await c.infer_frames(np.tile(crops[2], (4, 4, 1)), tile=48)  # 64x80: tiles through the loop
            health = await c.health()
            models = await c.models()
            with pytest.raises(InvalidInput):
                await c.infer(b"garbage")
            return one, many, frames, tiled, health, models

    one, many, frames, tiled, health, models = asyncio.run(main())
    with StylizeClient(url=server.grpc_url, model="animevideo_x2") as sync:
        expected = [sync.infer(c) for c in crops]
        np.testing.assert_array_equal(tiled, sync.infer_frames(np.tile(crops[2], (4, 4, 1)), tile=48))
    np.testing.assert_array_equal(one, expected[0])
    for got, want in zip(many, expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(frames, expected[1])
    assert health.ok and {m.id for m in models} == set(served)


def test_metrics_observe_real_requests(server, served):
    import prometheus_client
    from stylize.sdk.metrics import ClientMetrics

    _need(served, "animevideo_x2")
    registry = prometheus_client.CollectorRegistry()
    with StylizeClient(url=server.grpc_url, metrics=ClientMetrics(registry=registry)) as c:
        c.infer(real_photo_crop(16, 16), "animevideo_x2")
        with pytest.raises(StylizeError):
            c.infer(b"garbage", "animevideo_x2")
    get = registry.get_sample_value
    assert get("stylize_client_request_seconds_count", {"model": "animevideo_x2", "outcome": "ok"}) == 1
    assert get("stylize_client_errors_total", {"model": "animevideo_x2", "kind": "invalid_input"}) == 1
