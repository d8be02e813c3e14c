"""The image ensembles through a real tritonserver, called with a generic tritonclient (not the SDK).

Most tests use the session's server on the full built repository. The cache and byte-limit tests start a small server
of their own: the image step of animevideo_x2 written by the config writer with small limits, next to symlinks of the
built network, with Triton's response cache on.
"""

from __future__ import annotations

import io
import queue
import re
import shutil
import struct
import urllib.request
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from stylize.descriptors import ENCODED_IMAGE, ENCODED_RESULT, MODELS, REGISTRY, TensorSpec
from stylize.photos import photo_path
from stylize.server.steps.imaging import Limits

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


def test_sixteen_bit_png_in_sixteen_bit_png_out(client):
    import cv2

    rgb = np.asarray(photo("astronaut.png", (200, 80, 232, 104)).convert("RGB")).astype(np.uint16) * 257
    rgb[..., 0] += np.arange(32, dtype=np.uint16)[None, :] * 7  # low bits that an 8-bit path would lose
    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    out = infer(client, "animevideo_x2", buf.tobytes())
    assert out[24] == 16  # IHDR bit depth
    back = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (48, 64, 3)


def test_exif_orientation_icc_and_dpi(client):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = photo("astronaut.png", (200, 80, 240, 104)).convert("RGB")  # 40 wide, 24 high
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    out = opened(infer(client, "animevideo_x2", encoded(img, "JPEG", exif=exif, icc_profile=icc, dpi=(300, 300))))
    assert out.size == (48, 80)
    assert out.info.get("icc_profile") == icc and out.info.get("dpi") == pytest.approx((300, 300), abs=0.01)


def test_options_as_parameters_and_as_inputs(client):
    data = INPUTS["rgb"]()
    by_param = opened(infer(client, "animevideo_x2", data,
                            parameters={"output_format": "JPEG", "quality": 80, "outscale": 1.5}))
    by_input = opened(infer(client, "animevideo_x2", data, output_format="JPEG", quality=80, outscale=1.5))
    assert by_param.format == by_input.format == "JPEG" and by_param.size == by_input.size == (60, 48)
    webp = opened(infer(client, "animevideo_x2", INPUTS["rgba"](), output_format="WEBP"))
    assert webp.format == "WEBP" and webp.mode == "RGBA"
    style = opened(infer(client, "animeganv2", encoded(photo("astronaut.png", (0, 0, 300, 200))),
                         parameters={"max_side": 64}))
    assert style.size == (300, 200)  # the network saw 64x44; the output keeps the input size (outscale 1)


def test_a_batch_of_two_images_in_one_request(client):
    datas = [INPUTS["rgb"](), INPUTS["gray"]()]
    result = client.infer("animevideo_x2", image_inputs(datas))
    outs = [opened(b) for b in result.as_numpy(ENCODED_RESULT.name).reshape(-1)]
    assert [o.mode for o in outs] == ["RGB", "L"] and outs[1].size == (72, 56)


# ---- tiles ------------------------------------------------------------------------------------------------------


def test_tiled_output_matches_the_untiled_network_on_a_real_photo(client):
    frame = np.ascontiguousarray(np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB"))[40:200, 120:320])
    untiled = raw_frame(client, "animevideo_x2", frame)  # the whole frame through the raw network path
    tiled = np.asarray(opened(infer(client, "animevideo_x2", encoded(Image.fromarray(frame)), tile_size=64)))
    assert tiled.shape == untiled.shape == (320, 400, 3)
    assert psnr(tiled, untiled) >= 45.0


# ---- served output == in-process PyTorch of the same weights --------------------------------------------------


@pytest.mark.parametrize("model, side", [("esrgan_x4", 24), ("esrgan_anime_x4", 40), ("animevideo_x4", 64),
                                         ("animevideo_x3", 48)])
def test_served_real_esrgan_matches_pytorch(client, model, side):
    torch = pytest.importorskip("torch")
    from stylize_build.export import ServingWrapper
    from stylize_build.weights.loaders import load_weights

    desc = REGISTRY[model]
    net, info = load_weights(desc)
    assert info.kind == "ncnn"  # the real Real-ESRGAN weights
    frame = np.ascontiguousarray(np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB"))
                                 [60:60 + side, 180:180 + side])
    with torch.inference_mode():
        expected = ServingWrapper(net=net.eval(), desc=desc).eval()(torch.from_numpy(frame[None])).numpy()[0]
    served = np.asarray(opened(infer(client, model, encoded(Image.fromarray(frame)))))
    assert served.shape == expected.shape
    assert np.abs(served.astype(int) - expected).max() <= desc.parity_atol  # fp32 ORT vs fp32 PyTorch


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
    "float TIFF": (lambda: image_inputs(encoded(Image.fromarray(np.zeros((4, 4), np.float32), "F"), "TIFF")),
                   None, "mode 'F'"),
    "animated PNG": (lambda: image_inputs(encoded(Image.new("RGB", (8, 8)), "PNG", save_all=True,
                                                  append_images=[Image.new("RGB", (8, 8), "red")])),
                     None, "2 frames"),
    "decompression bomb": (lambda: image_inputs(encoded(Image.new("1", (4100, 4100)))), None, "pixels"),
    "output too large": (lambda: image_inputs(encoded(Image.new("RGB", (1100, 1100))), outscale=8.0), None,
                         "output would be"),
    "unknown output format": (lambda: image_inputs(INPUTS["rgb"](), output_format="GIF"), None, "output_format"),
    "quality out of range": (lambda: image_inputs(INPUTS["rgb"]()), {"quality": 0}, "quality 0"),
    "negative outscale": (lambda: image_inputs(INPUTS["rgb"](), outscale=-2.0), None, "outscale"),
    "max_side on an SR model": (lambda: image_inputs(INPUTS["rgb"]()), {"max_side": 64}, "does not apply"),
    "tile larger than configured": (lambda: image_inputs(INPUTS["rgb"](), tile_size=100000), None, "tile_size"),
    "option conflict": (lambda: image_inputs(INPUTS["rgb"](), quality=70), {"quality": 71}, "different values"),
    # refused by Triton itself, before the step runs
    "wrong dtype": (lambda: [_raw(ENCODED_IMAGE.name, "UINT8", [1, 4], np.zeros((1, 4), np.uint8))], None,
                    "data-type|datatype|expected"),
    "wrong shape": (lambda: [_raw(ENCODED_IMAGE.name, "BYTES", [1, 2], np.array([[b"a", b"b"]], dtype=object))],
                    None, "shape"),
    "option of the wrong dtype": (lambda: image_inputs(INPUTS["rgb"]())[:1] + [
        _raw("QUALITY", "FP32", [1, 1], np.array([[80.0]], np.float32))], None, "data-type|datatype|expected"),
    "missing image input": (lambda: [option_input(REGISTRY["animevideo_x2"].options[1].tensor, 80)], None,
                            "missing|expected"),
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
        client.async_infer("animevideo_x2", image_inputs(good if i % 2 else bad),
                           partial(lambda i, result, error: done.put((i, result, error)), i))
    outcomes = dict((i, (r, e)) for i, r, e in (done.get(timeout=120) for _ in range(8)))
    for i, (result, error) in outcomes.items():
        if i % 2:
            assert error is None and opened(result.as_numpy(ENCODED_RESULT.name).reshape(-1)[0]).size == (80, 64)
        else:
            assert error is not None and error.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_ready() and client.is_model_ready("animevideo_x2")
    after = scrape(server.metrics_url)
    model = REGISTRY["animevideo_x2"].image_model
    assert metric(after, "stylize_image_refused_total", model=model, reason="corrupt") \
        - metric(before, "stylize_image_refused_total", model=model, reason="corrupt") == 4
    assert metric(after, "stylize_image_decode_seconds_count", model=model) \
        - metric(before, "stylize_image_decode_seconds_count", model=model) == 4
    for family in ("decode_seconds", "network_seconds", "encode_seconds", "input_megapixels", "tiles"):
        assert f"stylize_image_{family}_bucket" in after


# ---- a small server of our own: response cache, byte limit --------------------------------------------------------


@pytest.fixture(scope="module")
def cached_server(model_repository, tmp_path_factory):
    from stylize.server.launcher import start_local
    from stylize_build import pbtxt

    desc = REGISTRY["animevideo_x2"]
    repo = tmp_path_factory.mktemp("cached_repository")
    (repo / desc.net_model).symlink_to((model_repository / desc.net_model).resolve(), target_is_directory=True)
    (repo / desc.id / "1").mkdir(parents=True)
    (repo / desc.id / "config.pbtxt").write_text(pbtxt.ensemble_config(desc, weights_status="real"))
    (repo / desc.image_model / "1").mkdir(parents=True)
    (repo / desc.image_model / "config.pbtxt").write_text(
        pbtxt.image_config(desc, weights_status="real", limits=Limits(max_bytes=200_000)))
    shutil.copy(model_repository / desc.image_model / "1" / "model.py", repo / desc.image_model / "1" / "model.py")
    with start_local(repo, cache_size=64 * 1024 * 1024) as s:
        yield s


def test_repeated_image_is_served_from_the_response_cache(cached_server):
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as c:
        data = INPUTS["rgb"]()
        first = infer(c, "animevideo_x2", data)
        hits = metric(scrape(cached_server.metrics_url), "nv_cache_num_hits_per_model", model="animevideo_x2")
        again = infer(c, "animevideo_x2", data)
        text = scrape(cached_server.metrics_url)
        assert again == first
        assert metric(text, "nv_cache_num_hits_per_model", model="animevideo_x2") == hits + 1
        # the step ran once for the two requests
        assert metric(text, "stylize_image_decode_seconds_count", model="animevideo_x2_image") == 1
        # options sent as inputs are part of the cache key ...
        assert opened(infer(c, "animevideo_x2", data, output_format="JPEG")).format == "JPEG"
        # ... request parameters are not (Triton 2.51): the cached PNG comes back. Why the options are inputs too.
        assert opened(infer(c, "animevideo_x2", data, parameters={"output_format": "WEBP"})).format == "PNG"


def test_byte_limit_is_configurable(cached_server):
    with grpcclient.InferenceServerClient(cached_server.grpc_url) as c:
        noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
        with pytest.raises(InferenceServerException, match="the limit is 200000") as e:
            infer(c, "animevideo_x2", encoded(Image.fromarray(noise)))
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert c.is_server_ready()
