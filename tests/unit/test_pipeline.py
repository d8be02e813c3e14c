"""The image step's pipeline without Triton: options from inputs (parameters refused), sizes, modes, limits."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from stylize.contract.descriptors import MAX_SIDE, NET_VERSION, OUTPUT_FORMAT, OUTSCALE, QUALITY, REGISTRY, TILE_SIZE
from stylize.contract.step import Limits, StepConfig
from stylize.engine.imaging import InvalidImage
from stylize.engine.photos import photo_path
from stylize.engine.pipeline import Options, _parse_one, parse_options, process, request_parameters
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


def test_options_come_from_inputs():
    from_inputs = parse_options(
        SR,
        tensors={
            OUTPUT_FORMAT.tensor.name: one(b"JPEG", object),
            QUALITY.tensor.name: one(80, np.int32),
            OUTSCALE.tensor.name: one(1.5, np.float32),
            TILE_SIZE.tensor.name: one(100, np.int32),
        },
    )
    assert from_inputs == Options(output_format="JPEG", quality=80, outscale=1.5, tile_size=100)
    assert parse_options(SR) == Options() and parse_options(SR, parameters="") == Options()
    assert parse_options(SR, parameters={"triton_enable_empty_final_response": True}) == Options()  # Triton's
    # the network version a client pins (INT64), for every image model
    for config in (SR, STYLE):
        assert parse_options(config, tensors={NET_VERSION.tensor.name: one(2, np.int64)}) == Options(net_version=2)


@pytest.mark.parametrize(
    "params, words",
    [
        # an option as a parameter: refused, naming the input (the response cache does not key on parameters)
        (
            {"outscale": 1.0},
            "send OUTSCALE as an input tensor: request parameters are not part of the response-cache key",
        ),
        ({"output_format": "PNG"}, "send OUTPUT_FORMAT as an input tensor"),
        ({"QUALITY": 80}, "send QUALITY as an input tensor"),
        ({"outscale": True}, "send OUTSCALE as an input tensor"),
        # misspelled or unknown: refused, listing the option inputs, with the closest one
        (
            {"qualty": 80},
            r"unknown request parameter 'qualty' \(did you mean QUALITY\?\).*OUTPUT_FORMAT, QUALITY, OUTSCALE, TILE_SIZE",
        ),
        ({"colour": "red"}, r"unknown request parameter 'colour': no request parameters"),
        ({"net_version": 2}, "send NET_VERSION as an input tensor"),
    ],
)
def test_request_parameters_are_refused(params, words):
    with pytest.raises(InvalidImage, match=words) as e:
        parse_options(SR, parameters=params)
    assert e.value.reason == "bad_option"
    with pytest.raises(InvalidImage, match=words):
        parse_options(SR, parameters=json.dumps(params))  # the JSON text the python backend hands over


def test_unreadable_parameters_are_the_request_s_fault():
    def not_utf8():
        return b'{"output_format": "\xff\xfe"}'.decode("utf-8")  # what the stub does with such a request

    with pytest.raises(InvalidImage, match="not valid UTF-8") as e:
        request_parameters(not_utf8)
    assert e.value.reason == "bad_option"
    with pytest.raises(InvalidImage, match="not a JSON object"):
        request_parameters(lambda: "[1, 2]")
    assert request_parameters(lambda: "{}") == {} and request_parameters(lambda: '{"a": 1}') == {"a": 1}


@pytest.mark.parametrize(
    "config, tensors, words",
    [
        (SR, {OUTPUT_FORMAT.tensor.name: one(b"GIF", object)}, "output_format"),
        (SR, {QUALITY.tensor.name: one(0, np.int32)}, "quality 0"),
        (SR, {OUTSCALE.tensor.name: one(-1.0, np.float32)}, "outscale"),
        (SR, {OUTSCALE.tensor.name: one(100.0, np.float32)}, "outscale"),
        (SR, {OUTSCALE.tensor.name: one(np.nan, np.float32)}, "outscale"),
        (SR, {MAX_SIDE.tensor.name: one(512, np.int32)}, "does not apply"),
        (SR, {TILE_SIZE.tensor.name: one(100000, np.int32)}, "tile_size"),
        (SR, {TILE_SIZE.tensor.name: one(8, np.int32)}, "tile_size"),
        (STYLE, {TILE_SIZE.tensor.name: one(64, np.int32)}, "not tiled"),
        (STYLE, {MAX_SIDE.tensor.name: one(4, np.int32)}, "max_side"),
        (SR, {NET_VERSION.tensor.name: one(0, np.int64)}, "net_version 0; model versions are numbered from 1"),
        (SR, {NET_VERSION.tensor.name: one(-1, np.int64)}, "net_version -1"),
    ],
)
def test_bad_options_are_refused(config, tensors, words):
    with pytest.raises(InvalidImage, match=words) as e:
        parse_options(config, tensors=tensors)
    assert e.value.reason == "bad_option"


def test_option_values_are_typed():
    with pytest.raises(InvalidImage, match="outscale must be a number"):
        _parse_one(SR, "outscale", True)  # JSON true is not 1.0
    with pytest.raises(InvalidImage, match="integer"):
        _parse_one(SR, "quality", "high")
    with pytest.raises(InvalidImage, match="one value") as e:
        parse_options(SR, tensors={QUALITY.tensor.name: np.array([1, 2], np.int32)})
    assert e.value.reason == "bad_tensor"


def test_max_side_never_exceeds_the_configured_bound():
    assert parse_options(STYLE, tensors={MAX_SIDE.tensor.name: one(100000, np.int32)}).max_side == STYLE.max_side
    assert parse_options(STYLE, tensors={MAX_SIDE.tensor.name: one(512, np.int32)}).max_side == 512


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


def test_descriptor_caps_the_input_pixels():
    """A descriptor's serving.max_pixels caps the build's limit (the longest request a pod drains), never raises it."""
    esr = REGISTRY["esrgan_x4"]
    config = StepConfig.from_descriptor(esr)
    assert config.limits.max_pixels == esr.serving.max_pixels < Limits().max_pixels
    assert StepConfig.from_descriptor(esr, limits=Limits(max_pixels=100)).limits.max_pixels == 100
    assert StepConfig.from_parameters(config.parameters()).limits.max_pixels == esr.serving.max_pixels
    assert SR.limits.max_pixels == Limits().max_pixels  # no cap: the build's limit


def test_output_limit():
    config = StepConfig.from_descriptor(REGISTRY["animevideo_x2"], limits=Limits(max_output_pixels=100 * 100))
    with pytest.raises(InvalidImage, match="output would be") as e:
        process(png(crop("astronaut.png")), config, Options(), sr_run)
    assert e.value.reason == "output_too_large"
