"""The image step's pipeline without Triton: options from parameters and inputs, sizes, modes, limits."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from stylize.descriptors import MAX_SIDE, OUTPUT_FORMAT, OUTSCALE, QUALITY, REGISTRY, TILE_SIZE
from stylize.photos import photo_path
from stylize.server.steps.imaging import InvalidImage, Limits
from stylize.server.steps.pipeline import Options, StepConfig, parse_options, process

from test_tiling import local_sr

pytestmark = pytest.mark.unit

SR = StepConfig.from_descriptor(REGISTRY["animevideo_x2"])
STYLE = StepConfig.from_descriptor(REGISTRY["animeganv2"])


def sr_run(b):
    return local_sr(b, 2)


def one(value, dtype):
    return np.array([value], dtype=dtype)


def png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def crop(name: str, box=(100, 100, 164, 148)) -> Image.Image:
    return Image.open(photo_path(name)).crop(box)


# ---- options ----------------------------------------------------------------------------------------------------


def test_options_from_parameters_and_from_inputs_agree():
    from_params = parse_options(SR, parameters=json.dumps(
        {"output_format": "jpg", "quality": 80, "outscale": 1.5, "tile_size": 100, "someone_elses": 1}))
    from_inputs = parse_options(SR, tensors={
        OUTPUT_FORMAT.tensor.name: one(b"JPEG", object), QUALITY.tensor.name: one(80, np.int32),
        OUTSCALE.tensor.name: one(1.5, np.float32), TILE_SIZE.tensor.name: one(100, np.int32)})
    assert from_params == from_inputs == Options(output_format="JPEG", quality=80, outscale=1.5, tile_size=100)
    assert parse_options(SR) == Options() and parse_options(SR, parameters="") == Options()
    both = parse_options(SR, parameters={"quality": 70}, tensors={QUALITY.tensor.name: one(70, np.int32)})
    assert both.quality == 70


@pytest.mark.parametrize("config, params, words", [
    (SR, {"output_format": "GIF"}, "output_format"),
    (SR, {"quality": 0}, "quality 0"),
    (SR, {"quality": "high"}, "integer"),
    (SR, {"outscale": -1.0}, "outscale"),
    (SR, {"outscale": 100.0}, "outscale"),
    (SR, {"outscale": "nan"}, "outscale"),
    (SR, {"max_side": 512}, "does not apply"),
    (SR, {"tile_size": 100000}, "tile_size"),
    (SR, {"tile_size": 8}, "tile_size"),
    (STYLE, {"tile_size": 64}, "not tiled"),
    (STYLE, {"max_side": 4}, "max_side"),
])
def test_bad_options_are_refused(config, params, words):
    with pytest.raises(InvalidImage, match=words) as e:
        parse_options(config, parameters=params)
    assert e.value.reason == "bad_option"


def test_conflicting_and_malformed_option_inputs():
    with pytest.raises(InvalidImage, match="different values"):
        parse_options(SR, parameters={"quality": 70}, tensors={QUALITY.tensor.name: one(71, np.int32)})
    with pytest.raises(InvalidImage, match="one value") as e:
        parse_options(SR, tensors={QUALITY.tensor.name: np.array([1, 2], np.int32)})
    assert e.value.reason == "bad_tensor"


def test_max_side_never_exceeds_the_configured_bound():
    assert parse_options(STYLE, tensors={MAX_SIDE.tensor.name: one(100000, np.int32)}).max_side == STYLE.max_side
    assert parse_options(STYLE, parameters={"max_side": 512}).max_side == 512


# ---- process ----------------------------------------------------------------------------------------------------


def result(data: bytes, config=SR, run=sr_run, **options) -> Image.Image:
    out, report = process(data, config, Options(**options), run)
    assert report.tiles >= 1 and report.decode_seconds >= 0 and report.encode_seconds >= 0
    return Image.open(io.BytesIO(out))


@pytest.mark.parametrize("name, mode", [("astronaut.png", "RGB"), ("logo.png", "RGBA"), ("camera.png", "L")])
def test_sizes_and_modes_of_real_photos(name, mode):
    img = crop(name)
    out = result(png(img))
    assert out.format == "PNG" and out.mode == mode and out.size == (2 * img.width, 2 * img.height)


def test_jpeg_input_outscale_and_output_formats():
    img = crop("astronaut.png").convert("RGB")
    out = result(png(img, "JPEG"), outscale=1.5, output_format="WEBP", quality=70)
    assert out.format == "WEBP" and out.size == (96, 72)
    out = result(png(crop("logo.png")), output_format="JPEG")
    assert out.format == "JPEG" and out.mode == "RGB"


def test_alpha_is_resized_and_reattached():
    img = crop("logo.png", (300, 300, 340, 330))
    alpha = np.asarray(img)[..., 3]
    out = np.asarray(result(png(img)))[..., 3]
    expected = np.asarray(Image.fromarray(alpha).resize((80, 60), Image.Resampling.LANCZOS))
    assert np.array_equal(out, expected)


def test_sixteen_bit_input_gives_sixteen_bit_output():
    import cv2

    ramp = (np.linspace(0, 65535, 40 * 30, dtype=np.float64).reshape(30, 40)).astype(np.uint16)
    arr = np.dstack([ramp, ramp[::-1], ramp.T[:30, :30].repeat(2, 1)[:, :40]])
    ok, buf = cv2.imencode(".png", arr[..., ::-1])
    out, _ = process(buf.tobytes(), SR, Options(), lambda b: np.repeat(np.repeat(b, 2, 1), 2, 2))
    back = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (60, 80, 3)
    # a smooth 16-bit ramp stays smooth: far more than 256 levels survive
    assert len(np.unique(back[..., 2])) > 1000


def test_max_side_shrinks_what_the_network_sees_and_the_output_keeps_the_input_size():
    img = Image.open(photo_path("astronaut.png")).convert("RGB").resize((200, 120))
    seen = []

    def identity(b):
        seen.append(b.shape)
        return b

    out = result(png(img), config=STYLE, run=identity, max_side=64)
    assert seen == [(1, 40, 64, 3)]  # 64 x 38.4 -> 38, padded to a multiple of 4
    assert out.size == (200, 120)


def test_padding_to_the_size_multiple_is_cropped_back():
    img = crop("astronaut.png", (0, 0, 37, 51))
    seen = []

    def identity(b):
        seen.append(b.shape)
        return b

    out = result(png(img), config=STYLE, run=identity)
    assert seen == [(1, 52, 40, 3)] and out.size == (37, 51)
    assert np.array_equal(np.asarray(out), np.asarray(img.convert("RGB")))


def test_tile_size_option_tiles_and_matches_untiled():
    img = Image.open(photo_path("astronaut.png")).convert("RGB").crop((0, 0, 150, 140))
    calls = []

    def run(b):
        calls.append(b.shape)
        return local_sr(b, 2)

    whole = np.asarray(result(png(img), run=run))
    assert len(calls) == 1
    tiled = np.asarray(result(png(img), run=run, tile_size=64))
    assert len(calls) > 2 and np.abs(whole.astype(int) - tiled).max() <= 1


def test_output_limit():
    config = StepConfig.from_descriptor(REGISTRY["animevideo_x2"], limits=Limits(max_output_pixels=100 * 100))
    with pytest.raises(InvalidImage, match="output would be") as e:
        process(png(crop("astronaut.png")), config, Options(), sr_run)
    assert e.value.reason == "output_too_large"
