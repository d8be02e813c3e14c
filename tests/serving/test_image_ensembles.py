"""The image ensembles through a real tritonserver, called with a generic tritonclient (not the SDK).

Most tests use the session's server on the full built repository. The cache, parameter and byte-limit tests start a
small server of their own: the animevideo_x2 and animeganv2 ensembles as the build writes them now (request_check,
then the cached image step, with small limits), next to symlinks of the built networks, with Triton's response cache
on.
"""

from __future__ import annotations

import io
import json
import queue
import re
import struct
import urllib.error
import urllib.request
import zlib
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from small_repository import small_repository
from stylize.contract.descriptors import (
    ENCODED_IMAGE,
    ENCODED_RESULT,
    MAX_SIDE,
    MODELS,
    REGISTRY,
    TensorSpec,
)
from stylize.contract.step import Limits
from stylize.engine.photos import photo_path
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.triton

IMAGE_MODELS = [d.id for d in MODELS if not d.window]


# ---- helpers ----------------------------------------------------------------------------------------------------


def encoded(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(name: str, box: tuple[int, int, int, int]) -> Image.Image:
    return Image.open(photo_path(name)).crop(box)


def option_input(spec: TensorSpec, value) -> grpcclient.InferInput:
    t = grpcclient.InferInput(spec.name, [1, 1], spec.dtype)
    t.set_data_from_numpy(np.array([[value]], dtype=spec.numpy_dtype))
    return t


def image_inputs(data, model: str = "animevideo_x2", **options) -> list[grpcclient.InferInput]:
    items = data if isinstance(data, list) else [data]
    t = grpcclient.InferInput(ENCODED_IMAGE.name, [len(items), 1], "BYTES")
    t.set_data_from_numpy(np.array(items, dtype=np.object_).reshape(-1, 1))
    specs = {o.name: o.tensor for o in REGISTRY[model].options}
    return [t, *(option_input(specs[k], v) for k, v in options.items())]


def infer(client, model: str, data, *, parameters=None, **options) -> bytes:
    result = client.infer(model, image_inputs(data, model, **options), parameters=parameters)
    return result.as_numpy(ENCODED_RESULT.name).reshape(-1)[0]


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def raw_frame(client, model: str, frame: np.ndarray) -> np.ndarray:
    d = REGISTRY[model]
    t = grpcclient.InferInput(d.net_input.name, [1, *frame.shape], "UINT8")
    t.set_data_from_numpy(frame[None])
    return client.infer(d.net_model, [t]).as_numpy(d.net_output.name)[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def scrape(url: str) -> str:
    return urllib.request.urlopen(url, timeout=10).read().decode()


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def client(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


# ---- every ensemble, real photos, every common mode --------------------------------------------------------------


def logo_with_transparency() -> bytes:
    """scikit-image's logo.png is RGBA but fully opaque: the same file with an alpha ramp from 0 to 255."""
    img = photo("logo.png", (220, 180, 252, 204))
    rgba = np.asarray(img).copy()
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1], dtype=np.uint8)[None, :]
    return encoded(Image.fromarray(rgba, "RGBA"))


# small crops: esrgan_x4 costs ~1 s per 64x64 on two cores
INPUTS = {
    "rgb": lambda: encoded(photo("astronaut.png", (200, 80, 240, 112))),
    "rgba": logo_with_transparency,
    "gray": lambda: encoded(photo("camera.png", (200, 100, 236, 128))),
    "jpeg": lambda: encoded(photo("chelsea.png", (200, 100, 240, 124)).convert("RGB"), "JPEG", quality=90),
}
MODES = {"rgb": "RGB", "rgba": "RGBA", "gray": "L", "jpeg": "RGB"}


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_every_image_ensemble_answers_with_the_right_size_and_mode(client, model, kind):
    data = INPUTS[kind]()
    w, h = Image.open(io.BytesIO(data)).size
    out = opened(infer(client, model, data))
    s = REGISTRY[model].scale
    assert out.format == "PNG" and out.mode == MODES[kind] and out.size == (w * s, h * s)
    if kind == "rgba":  # the alpha ramp survived, resized
        alpha = np.asarray(out)[..., 3].astype(int)
        assert alpha[:, 0].max() <= 8 and alpha[:, -1].min() >= 247 and np.all(np.diff(alpha[0]) >= -2)


def _step_reference(server, client, model: str, data: bytes) -> bytes:
    """What the image step answers for ``data``, computed here: the pipeline with the served step's own config
    (read from the server) and its network file opened in this process, on the step's runtime."""
    from stylize.contract import access
    from stylize.contract.step import IN_PROCESS_RUNTIMES, StepConfig
    from stylize.engine.network import newest_model_file, open_network
    from stylize.engine.pipeline import Options, process

    desc = REGISTRY[model]
    cfg = client.get_model_config(desc.image_model, as_json=True, headers=access.grpc_headers(server.admin_key))
    config = StepConfig.from_parameters({k: v["string_value"] for k, v in cfg["config"]["parameters"].items()})
    found = newest_model_file(server.settings.model_repository, config.net_model)
    assert found is not None, config.net_model
    runtime = config.net_runtime if config.net_runtime in IN_PROCESS_RUNTIMES else "onnxruntime"  # GPU: BLS
    net = open_network(
        found[0],
        runtime=runtime,
        input_name=desc.net_input.name,
        output_name=desc.net_output.name,
        threads=config.net_threads,
        precision=config.net_precision if runtime == "openvino" else "fp32",
    )
    return process(data, config, Options(), net)[0]


def test_sixteen_bit_png_in_sixteen_bit_png_out(server, client):
    """A smooth 16-bit gradient (its low byte varies from pixel to pixel) comes back in 16 bits with the low byte
    kept: not x257 of an 8-bit result, and the same as the pipeline computes here through the same network. An
    8-bit path widened x257 misses every pixel by the lost residual (|value - 257 round(value / 257)|, 64 on
    average for a gradient); the served picture must be within a sixteenth of that."""
    import cv2

    h, w = 24, 32
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([8000 + 1500 * x + 37 * y, 12000 + 1900 * y + 23 * x, 60000 - 1100 * x - 900 * y], axis=-1)
    rgb = np.rint(rgb).astype(np.uint16)
    assert len(np.unique(rgb % 257)) > 200  # the low byte carries information
    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    data = buf.tobytes()
    out = infer(client, "animevideo_x2", data)
    assert out[24] == 16  # IHDR bit depth
    served = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1].astype(np.int64)
    assert served.shape == (2 * h, 2 * w, 3)
    assert np.mean(served % 257 != 0) > 0.9, "the served 16 bits are x257 of 8 bits: the low byte was lost"
    ref = _step_reference(server, client, "animevideo_x2", data)
    assert ref[24] == 16
    expected = cv2.imdecode(np.frombuffer(ref, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1].astype(np.int64)
    widened = 257 * ((expected + 128) // 257)  # what an 8-bit path would serve for the same network output
    eight_bit_error = np.abs(widened - expected).mean()
    assert eight_bit_error > 32, eight_bit_error  # the tolerance below tells the two paths apart
    error = np.abs(served - expected).mean()
    print(f"16 bits: served vs in-process {error:.2f} on average, an 8-bit path {eight_bit_error:.1f}")
    assert error <= eight_bit_error / 16, (error, eight_bit_error)


def test_exif_orientation_icc_and_dpi(client):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = photo("astronaut.png", (200, 80, 240, 104)).convert("RGB")  # 40 wide, 24 high
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    out = opened(infer(client, "animevideo_x2", encoded(img, "JPEG", exif=exif, icc_profile=icc, dpi=(300, 300))))
    assert out.size == (48, 80)
    assert out.info.get("icc_profile") == icc and out.info.get("dpi") == pytest.approx((300, 300), abs=0.01)


def test_options_as_inputs(client):
    data = INPUTS["rgb"]()
    by_input = opened(infer(client, "animevideo_x2", data, output_format="JPEG", quality=80, outscale=1.5))
    assert by_input.format == "JPEG" and by_input.size == (60, 48)
    webp = opened(infer(client, "animevideo_x2", INPUTS["rgba"](), output_format="WEBP"))
    assert webp.format == "WEBP" and webp.mode == "RGBA"
    style = opened(infer(client, "animeganv2", encoded(photo("astronaut.png", (0, 0, 300, 200))), max_side=64))
    assert style.size == (300, 200)  # the network saw 64x44; the output keeps the input size (outscale 1)
    # the same options as request parameters are refused: the response cache does not key on parameters
    with pytest.raises(InferenceServerException, match="send OUTSCALE as an input tensor") as e:
        infer(client, "animevideo_x2", data, parameters={"outscale": 1.5})
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_a_batch_of_two_images_in_one_request(client):
    datas = [INPUTS["rgb"](), INPUTS["gray"]()]
    result = client.infer("animevideo_x2", image_inputs(datas))
    outs = [opened(b) for b in result.as_numpy(ENCODED_RESULT.name).reshape(-1)]
    assert [o.mode for o in outs] == ["RGB", "L"] and outs[1].size == (72, 56)


def test_a_bad_image_in_a_batch_is_named(client):
    """One response per request (Triton): a batch of 8 with one bad item fails as a whole, with INVALID_ARGUMENT
    naming the item and why; the next request is served."""
    from tritonclient.utils import InferenceServerException

    datas = [INPUTS["rgb"]()] * 8
    datas[5] = b"not an image at all"
    with pytest.raises(InferenceServerException) as e:
        client.infer("animevideo_x2", image_inputs(datas))
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "item 5 of the request's 8 images" in e.value.message(), e.value.message()
    assert opened(infer(client, "animevideo_x2", INPUTS["rgb"]())).mode == "RGB"


# ---- tiles ------------------------------------------------------------------------------------------------------


def test_tiled_output_matches_the_untiled_network_on_a_real_photo(client):
    frame = np.ascontiguousarray(np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB"))[40:200, 120:320])
    untiled = raw_frame(client, "animevideo_x2", frame)  # the whole frame through the raw network path
    tiled = np.asarray(opened(infer(client, "animevideo_x2", encoded(Image.fromarray(frame)), tile_size=64)))
    assert tiled.shape == untiled.shape == (320, 400, 3)
    assert psnr(tiled, untiled) >= 45.0


# ---- served output == in-process PyTorch of the same weights --------------------------------------------------


@pytest.mark.parametrize(
    "model, side", [("esrgan_x4", 24), ("esrgan_anime_x4", 40), ("animevideo_x4", 64), ("animevideo_x3", 48)]
)
def test_served_real_esrgan_matches_pytorch(client, model, side):
    import torch
    from stylize_build.export import ServingWrapper
    from stylize_build.weights.loaders import load_weights

    desc = REGISTRY[model]
    net, info = load_weights(desc)
    assert info.kind == "ncnn"  # the real Real-ESRGAN weights
    frame = np.ascontiguousarray(
        np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB"))[60 : 60 + side, 180 : 180 + side]
    )
    with torch.inference_mode():
        expected = ServingWrapper(net=net.eval(), desc=desc).eval()(torch.from_numpy(frame[None])).numpy()[0]
    served = np.asarray(opened(infer(client, model, encoded(Image.fromarray(frame)))))
    assert served.shape == expected.shape
    assert np.abs(served.astype(int) - expected).max() <= desc.checks.parity_atol  # fp32 ORT vs fp32 PyTorch


# ---- bad input --------------------------------------------------------------------------------------------------


def _zero_width_png() -> bytes:
    good = encoded(Image.new("RGB", (4, 4)))
    body = struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0)
    return good[:8] + struct.pack(">I", 13) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + good[33:]


def _photo_jpeg() -> bytes:
    return encoded(photo("astronaut.png", (0, 0, 128, 128)).convert("RGB"), "JPEG", quality=90)


def _raw(name: str, dtype: str, shape: list[int], array) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, shape, dtype)
    t.set_data_from_numpy(array)
    return t


BAD_REQUESTS = {
    "empty bytes": (lambda: image_inputs(b""), None, "empty"),
    "text, not an image": (lambda: image_inputs(b"hello, not an image"), None, "not a recognised image"),
    "truncated PNG": (lambda: image_inputs(INPUTS["rgb"]()[:70]), None, "corrupt"),
    "truncated JPEG": (lambda: image_inputs(_photo_jpeg()[:1500]), None, "corrupt"),
    "GIF": (lambda: image_inputs(encoded(Image.new("RGB", (8, 8)), "GIF")), None, "GIF"),
    "zero width": (lambda: image_inputs(_zero_width_png()), None, "zero-sized"),
    "float TIFF": (
        lambda: image_inputs(encoded(Image.fromarray(np.zeros((4, 4), np.float32), "F"), "TIFF")),
        None,
        "mode 'F'",
    ),
    "animated PNG": (
        lambda: image_inputs(
            encoded(Image.new("RGB", (8, 8)), "PNG", save_all=True, append_images=[Image.new("RGB", (8, 8), "red")])
        ),
        None,
        "2 frames",
    ),
    "decompression bomb": (lambda: image_inputs(encoded(Image.new("1", (4100, 4100)))), None, "pixels"),
    "output too large": (
        lambda: image_inputs(encoded(Image.new("RGB", (1100, 1100))), outscale=8.0),
        None,
        "output would be",
    ),
    "unknown output format": (lambda: image_inputs(INPUTS["rgb"](), output_format="GIF"), None, "output_format"),
    "quality out of range": (lambda: image_inputs(INPUTS["rgb"](), quality=0), None, "quality 0"),
    "negative outscale": (lambda: image_inputs(INPUTS["rgb"](), outscale=-2.0), None, "outscale"),
    "max_side on an SR model": (
        lambda: image_inputs(INPUTS["rgb"]()) + [option_input(MAX_SIDE.tensor, 64)],
        None,
        "unexpected inference input 'MAX_SIDE'|MAX_SIDE",
    ),
    "tile larger than configured": (lambda: image_inputs(INPUTS["rgb"](), tile_size=100000), None, "tile_size"),
    "option as a parameter": (
        lambda: image_inputs(INPUTS["rgb"]()),
        {"quality": 71},
        "send QUALITY as an input tensor: request parameters are not part of the response-cache key",
    ),
    "misspelled parameter": (
        lambda: image_inputs(INPUTS["rgb"]()),
        {"output_fromat": "PNG"},
        r"unknown request parameter 'output_fromat' \(did you mean OUTPUT_FORMAT\?\)",
    ),
    # refused by Triton itself, before the step runs
    "wrong dtype": (
        lambda: [_raw(ENCODED_IMAGE.name, "UINT8", [1, 4], np.zeros((1, 4), np.uint8))],
        None,
        "data-type|datatype|expected",
    ),
    "wrong shape": (
        lambda: [_raw(ENCODED_IMAGE.name, "BYTES", [1, 2], np.array([[b"a", b"b"]], dtype=object))],
        None,
        "shape",
    ),
    "option of the wrong dtype": (
        lambda: image_inputs(INPUTS["rgb"]())[:1] + [_raw("QUALITY", "FP32", [1, 1], np.array([[80.0]], np.float32))],
        None,
        "data-type|datatype|expected",
    ),
    "missing image input": (
        lambda: [option_input(REGISTRY["animevideo_x2"].options[1].tensor, 80)],
        None,
        "missing|expected",
    ),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_input_is_refused_with_invalid_argument_and_a_reason(client, name):
    make, parameters, words = BAD_REQUESTS[name]
    with pytest.raises(InferenceServerException) as e:
        client.infer("animevideo_x2", make(), parameters=parameters)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
    assert re.search(words, e.value.message(), re.IGNORECASE), e.value.message()


def test_server_stays_ready_and_good_requests_in_flight_with_bad_ones_succeed(server, client):
    assert len(BAD_REQUESTS) >= 15
    before = scrape(server.metrics_url)
    done: queue.Queue = queue.Queue()
    good = INPUTS["rgb"]()
    bad = good[:70]  # truncated
    for i in range(8):  # interleaved, all in flight together: the step gets them in the same scheduling rounds
        client.async_infer(
            "animevideo_x2",
            image_inputs(good if i % 2 else bad),
            partial(lambda i, result, error: done.put((i, result, error)), i),
        )
    outcomes = dict((i, (r, e)) for i, r, e in (done.get(timeout=120) for _ in range(8)))
    for i, (result, error) in outcomes.items():
        if i % 2:
            assert error is None and opened(result.as_numpy(ENCODED_RESULT.name).reshape(-1)[0]).size == (80, 64)
        else:
            assert error is not None and error.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_ready() and client.is_model_ready("animevideo_x2")
    after = scrape(server.metrics_url)
    model = REGISTRY["animevideo_x2"].image_model
    assert (
        metric(after, "stylize_image_refused_total", model=model, reason="corrupt")
        - metric(before, "stylize_image_refused_total", model=model, reason="corrupt")
        == 4
    )
    assert (
        metric(after, "stylize_image_decode_seconds_count", model=model)
        - metric(before, "stylize_image_decode_seconds_count", model=model)
        == 4
    )
    for family in ("decode_seconds", "network_seconds", "encode_seconds", "input_megapixels", "tiles"):
        assert f"stylize_image_{family}_bucket" in after


# ---- a small server of our own: response cache, byte limit --------------------------------------------------------


@pytest.fixture(scope="module")
def cached_server(model_repository, tmp_path_factory):
    from stylize.server.launcher import start_local

    repo = small_repository(
        model_repository,
        tmp_path_factory.mktemp("cached_repository"),
        ["animevideo_x2", "animeganv2"],
        limits=Limits(max_bytes=200_000),
    )
    with start_local(repo, cache_size=64 * 1024 * 1024) as s:
        yield s


def _counts(server, model_id: str) -> tuple[float, float, float]:
    """(cache hits, cache misses, images the step decoded) of an image model, from the metrics port: the cache is
    the nested ensemble's (``cached_model``), the decoding its image step's."""
    text = scrape(server.metrics_url)
    desc = REGISTRY[model_id]
    return (
        metric(text, "nv_cache_num_hits_per_model", model=desc.cached_model),
        metric(text, "nv_cache_num_misses_per_model", model=desc.cached_model),
        metric(text, "stylize_image_decode_seconds_count", model=desc.image_model),
    )


def test_repeated_image_is_served_from_the_response_cache(cached_server):
    step = "animevideo_x2"
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as c:
        data = encoded(photo("coffee.png", (100, 100, 140, 130)))
        hits, misses, decoded = _counts(cached_server, step)
        first = infer(c, "animevideo_x2", data)
        again = infer(c, "animevideo_x2", data)
        assert again == first
        # one miss, then one hit: the step decoded the image once for the two requests
        assert _counts(cached_server, step) == (hits + 1, misses + 1, decoded + 1)
        # an option sent as an input is part of the cache key
        assert opened(infer(c, "animevideo_x2", data, output_format="JPEG")).format == "JPEG"
        assert _counts(cached_server, step) == (hits + 1, misses + 2, decoded + 2)


def test_a_refused_image_is_refused_again_with_the_cache_on(cached_server):
    """A backend model's cache stores error responses and replays them as successes without outputs (seen on
    2.51, with the cache on the image step): the cache is on a nested ensemble, which keeps successes only."""
    bad = photo_path("astronaut.png").read_bytes()[:4000]  # a truncated PNG
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as c:
        hits, misses, _ = _counts(cached_server, "animevideo_x2")
        for _ in range(3):
            with pytest.raises(InferenceServerException, match="truncated") as e:
                infer(c, "animevideo_x2", bad)
            assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert _counts(cached_server, "animevideo_x2")[0] == hits  # never answered from the cache


OPTION_PAIRS = [  # (model, option, two values that must not share a cache entry)
    ("animevideo_x2", "quality", (50, 90)),
    ("animevideo_x2", "tile_size", (64, 96)),
    ("animeganv2", "max_side", (32, 48)),
]


@pytest.mark.parametrize("model, option, values", OPTION_PAIRS, ids=[o for _, o, _ in OPTION_PAIRS])
def test_options_sent_as_inputs_do_not_share_cache_entries(cached_server, model, option, values):
    step = model
    extra = {"output_format": "JPEG"} if option == "quality" else {}
    data = encoded(photo("astronaut.png", (180, 60, 300, 140)))  # 120x80: two 64-px tiles or more
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as c:
        hits, misses, decoded = _counts(cached_server, step)
        a = infer(c, model, data, **{option: values[0]}, **extra)
        b = infer(c, model, data, **{option: values[1]}, **extra)
        # each value computed its own answer ...
        assert _counts(cached_server, step) == (hits, misses + 2, decoded + 2)
        assert a != b  # (JPEG quality, other tile seams, the network saw another size)
        # ... and each is then answered from its own entry
        assert infer(c, model, data, **{option: values[1]}, **extra) == b
        assert infer(c, model, data, **{option: values[0]}, **extra) == a
        assert _counts(cached_server, step) == (hits + 2, misses + 2, decoded + 2)


# A parameter is refused even when the same image is in the cache: before, the cached answer of the plain request
# came back (a PNG at 2x for output_format=WEBP, outscale=1, or an invalid quality=abc)
PARAMETERS = [
    (
        {"output_format": "WEBP"},
        "send OUTPUT_FORMAT as an input tensor: request parameters are not part of the response-cache key",
    ),
    ({"outscale": 1.0}, "send OUTSCALE as an input tensor"),
    ({"outscale": True}, "send OUTSCALE as an input tensor"),
    ({"quality": "abc"}, "send QUALITY as an input tensor"),
    (
        {"qualty": 80},
        r"unknown request parameter 'qualty' \(did you mean QUALITY\?\).*OUTPUT_FORMAT, QUALITY, "
        "OUTSCALE, MAX_SIDE, TILE_SIZE",
    ),
]


@pytest.mark.parametrize(
    "parameters, words", PARAMETERS, ids=[next(iter(p)) + "=" + str(next(iter(p.values()))) for p, _ in PARAMETERS]
)
def test_a_parameter_is_refused_even_for_a_cached_image(cached_server, parameters, words):
    step = "animevideo_x2"
    data = encoded(photo("chelsea.png", (150, 60, 190, 90)))
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as c:
        plain = infer(c, "animevideo_x2", data)
        assert infer(c, "animevideo_x2", data) == plain  # in the cache now
        hits = _counts(cached_server, step)[0]
        with pytest.raises(InferenceServerException) as e:
            infer(c, "animevideo_x2", data, parameters=parameters)
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
        assert re.search(words, e.value.message()), e.value.message()
        assert _counts(cached_server, step)[0] == hits  # the cached step was not reached


def _http_infer(server, model: str, data: bytes, parameters_json: bytes) -> tuple[int, bytes]:
    """A binary HTTP inference request with a hand-written JSON header (bytes that a JSON library would not write)."""
    header = (
        b'{"parameters":'
        + parameters_json
        + b',"inputs":[{"name":"'
        + ENCODED_IMAGE.name.encode()
        + b'","shape":[1,1],"datatype":"BYTES","parameters":{"binary_data_size":'
        + str(len(data) + 4).encode()
        + b'}}],"outputs":[{"name":"'
        + ENCODED_RESULT.name.encode()
        + b'","parameters":{"binary_data":true}}]}'
    )
    body = header + struct.pack("<I", len(data)) + data
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/{model}/infer",
        data=body,
        method="POST",
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize(
    "parameters_json, words",
    [
        (b'{"output_format": "\xff\xfePNG"}', "not valid UTF-8"),  # was INTERNAL, HTTP 500
        (b'{"\xff": 1}', "not valid UTF-8"),
        (b'{"outscale": true}', "send OUTSCALE as an input tensor"),  # was taken as 1.0
        (b'{"tilesize": 64}', r"unknown request parameter 'tilesize' \(did you mean TILE_SIZE\?\)"),  # was ignored
    ],
    ids=["non-utf8 value", "non-utf8 name", "outscale=true", "misspelled"],
)
def test_bad_parameters_over_http_are_refused_with_400(cached_server, parameters_json, words):
    data = encoded(photo("rocket.jpg", (200, 100, 232, 124)).convert("RGB"))
    status, body = _http_infer(cached_server, "animevideo_x2", data, b"{}")
    assert status == 200  # the same request without parameters works
    status, body = _http_infer(cached_server, "animevideo_x2", data, parameters_json)
    assert status == 400, body  # INVALID_ARGUMENT over HTTP
    assert re.search(words, json.loads(body)["error"]), body
    assert urllib.request.urlopen(f"http://{cached_server.http_url}/v2/health/ready").status == 200


def test_byte_limit_is_configurable(cached_server):
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as c:
        noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
        with pytest.raises(InferenceServerException, match="the limit is 200000") as e:
            infer(c, "animevideo_x2", encoded(Image.fromarray(noise)))
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert c.is_server_ready()
