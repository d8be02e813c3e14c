"""Decode/encode functions of the python steps, on real photos and on files the tests make."""

import io

import numpy as np
import pytest
from PIL import Image

from stylize.photos import photo_path
from stylize.server.steps.imaging import InvalidImage, Limits, crop_output, decode_image, encode_image, pad_to_multiple

pytestmark = pytest.mark.unit


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def test_decode_real_photo_roundtrip():
    data = photo_path("astronaut.png").read_bytes()
    frame, geom = decode_image(data, size_multiple=1)
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    assert geom.tolist() == [512, 512, 512, 512]
    again, _ = decode_image(encode_image(frame), size_multiple=1)
    assert np.array_equal(again, frame)  # PNG is lossless


def test_pad_and_crop_back_with_scale():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (37, 51, 3), dtype=np.uint8)
    frame, geom = decode_image(png_bytes(arr), size_multiple=4)
    assert frame.shape == (40, 52, 3)
    assert np.array_equal(frame[:37, :51], arr)
    assert np.array_equal(frame[37, :51], arr[35])  # reflect padding, not zeros
    up = np.repeat(np.repeat(frame, 4, axis=0), 4, axis=1)  # stands in for a x4 network
    out = crop_output(up, geom)
    assert out.shape == (148, 204, 3)


def test_grayscale_and_rgba_photos_decode_to_rgb():
    for name in ("camera.png", "logo.png"):
        frame, geom = decode_image(photo_path(name).read_bytes())
        assert frame.ndim == 3 and frame.shape[2] == 3


def test_exif_orientation_is_applied():
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    frame, geom = decode_image(buf.getvalue())
    assert frame.shape[:2] == (20, 10)


def test_tiny_image_pads_by_edge():
    frame = pad_to_multiple(np.zeros((1, 1, 3), np.uint8), 4)
    assert frame.shape == (4, 4, 3)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, not an image", "not a recognised image"),
        (png_bytes(np.zeros((64, 64, 3), np.uint8))[:60], "corrupt or truncated"),
    ],
)
def test_bad_input_is_refused_with_reason(data, reason):
    with pytest.raises(InvalidImage, match=reason):
        decode_image(data)


def test_limits():
    data = png_bytes(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InvalidImage, match="pixels"):
        decode_image(data, limits=Limits(max_pixels=64 * 63))
    with pytest.raises(InvalidImage, match="bytes"):
        decode_image(data, limits=Limits(max_bytes=10))


@pytest.mark.parametrize("fmt, magic", [("PNG", b"\x89PNG"), ("JPEG", b"\xff\xd8"), ("WEBP", b"RIFF")])
def test_encode_formats(fmt, magic):
    assert encode_image(np.zeros((8, 8, 3), np.uint8), fmt=fmt).startswith(magic)
    with pytest.raises(InvalidImage, match="unsupported output format"):
        encode_image(np.zeros((8, 8, 3), np.uint8), fmt="GIF")
