"""Image I/O of the image step, on real photos (scikit-image's data) and on files the tests make."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps
from stylize.contract.frames import pad_to_multiple
from stylize.contract.step import Limits
from stylize.engine.imaging import (
    REASONS,
    InvalidImage,
    apply_orientation,
    decode,
    encode,
    fit_within,
    recompose,
    resize,
)
from stylize.engine.photos import photo_path

pytestmark = pytest.mark.unit


def save(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG written by OpenCV (an independent writer)."""
    import cv2

    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    assert ok
    return buf.tobytes()


def read16(data: bytes) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return arr[..., [2, 1, 0, 3][: arr.shape[2]]] if arr.ndim == 3 else arr


def chunks(png: bytes) -> list[bytes]:
    out, pos = [], 8
    while pos < len(png):
        n = struct.unpack(">I", png[pos : pos + 4])[0]
        out.append(png[pos + 4 : pos + 8])
        pos += 12 + n
    return out


# ---- decode: modes ----------------------------------------------------------------------------------------------


def test_real_photo_decodes_to_rgb():
    pic = decode(photo_path("astronaut.png").read_bytes())
    assert pic.color.shape == (512, 512, 3) and pic.color.dtype == np.uint8
    assert pic.alpha is None and not pic.gray and pic.bits == 8 and pic.source_format == "PNG"
    assert np.array_equal(pic.color, np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB")))


def test_rgba_logo_keeps_alpha_aside():
    ref = np.asarray(Image.open(photo_path("logo.png")))
    assert ref.shape[2] == 4
    pic = decode(photo_path("logo.png").read_bytes())
    assert np.array_equal(pic.alpha, ref[..., 3]) and np.array_equal(pic.color, ref[..., :3])


def test_grayscale_camera_is_gray_replicated_for_the_network():
    ref = np.asarray(Image.open(photo_path("camera.png")))
    pic = decode(photo_path("camera.png").read_bytes())
    assert pic.gray and pic.alpha is None
    assert all(np.array_equal(pic.color[..., c], ref) for c in range(3))


def test_la_palette_and_cmyk():
    rng = np.random.default_rng(0)
    la = Image.fromarray(rng.integers(0, 256, (12, 10, 2), dtype=np.uint8), "LA")
    pic = decode(save(la))
    assert pic.gray and pic.alpha is not None and pic.alpha.shape == (12, 10)

    pal = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert("P")
    pic = decode(save(pal))
    assert pic.alpha is None and np.array_equal(pic.color, np.asarray(pal.convert("RGB")))
    pal.info["transparency"] = 0
    assert decode(save(pal, transparency=0)).alpha is not None  # palette transparency becomes alpha

    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    pic = decode(save(rgb.convert("CMYK"), "JPEG", quality=95))
    assert pic.color.shape == (12, 10, 3) and not pic.gray and pic.icc_profile is None


def test_sixteen_bit_png_keeps_its_low_bits_as_residual():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    pic = decode(png16(arr))
    assert pic.bits == 16 and pic.residual is not None
    rebuilt = 257 * pic.color.astype(np.int32) + pic.residual
    assert np.array_equal(rebuilt, arr) and np.abs(pic.residual).max() <= 128
    gray = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    pic = decode(png16(gray))
    assert (
        pic.gray
        and pic.bits == 16
        and np.array_equal(257 * pic.color[..., 0].astype(np.int32) + pic.residual[..., 0], gray)
    )
    rgba = rng.integers(0, 65536, (9, 11, 4), dtype=np.uint16)
    pic = decode(png16(rgba))
    assert pic.alpha.dtype == np.uint16 and np.array_equal(pic.alpha, rgba[..., 3])


def test_exif_orientation_matches_pillow_for_every_code():
    rng = np.random.default_rng(2)
    base = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8))
    for code in range(1, 9):
        exif = base.getexif()
        exif[0x0112] = code
        data = save(base, "PNG", exif=exif)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        assert np.array_equal(decode(data).color, expected), code
        assert np.array_equal(apply_orientation(np.asarray(base), code), expected), code


def test_icc_and_dpi_are_read():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.open(photo_path("astronaut.png")).convert("RGB").crop((0, 0, 32, 32))
    pic = decode(save(img, "PNG", icc_profile=icc, dpi=(300, 300)))
    assert pic.icc_profile == icc and pic.dpi == pytest.approx((300, 300), abs=0.01)


# ---- decode: refusals -------------------------------------------------------------------------------------------


def _zero_width_png() -> bytes:
    good = save(Image.new("RGB", (4, 4)))
    body = struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return good[:8] + ihdr + good[33:]


def _float_tiff() -> bytes:
    return save(Image.fromarray(np.zeros((4, 4), np.float32), "F"), "TIFF")


def _animated_png() -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    return save(frames[0], "PNG", save_all=True, append_images=frames[1:])


BAD = [
    (b"", "empty", "empty"),
    (b"hello, not an image", "not_an_image", "not a recognised image"),
    # a TIFF header Pillow cannot identify is still named a TIFF (not "not an image ... supported: TIFF")
    (b"II*\x00" + bytes(60), "not_an_image", "a TIFF the decoder cannot read"),
    (save(Image.new("RGB", (64, 64), "red"))[:60], "corrupt", "corrupt"),
    (save(Image.new("RGB", (8, 8)), "GIF"), "unsupported_format", "GIF"),
    (_zero_width_png(), "zero_size", "zero-sized side"),
    (_float_tiff(), "unsupported_mode", "mode 'F'"),
    (_animated_png(), "animated", "2 frames"),
    (save(Image.new("1", (4100, 4100))), "too_many_pixels", "pixels"),
]


@pytest.mark.parametrize("data, reason, words", BAD, ids=[b[1] for b in BAD])
def test_bad_input_is_refused_with_a_reason(data, reason, words):
    with pytest.raises(InvalidImage, match=words) as e:
        decode(data)
    assert e.value.reason == reason and reason in REASONS


def test_jpeg_truncated_in_the_scan_is_refused():
    data = save(Image.open(photo_path("astronaut.png")).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(InvalidImage, match="corrupt") as e:
        decode(data[: len(data) // 2])
    assert e.value.reason == "corrupt"


def test_byte_and_pixel_limits():
    data = save(Image.new("RGB", (64, 64)))
    with pytest.raises(InvalidImage, match="pixels"):
        decode(data, limits=Limits(max_pixels=64 * 63))
    with pytest.raises(InvalidImage, match="bytes") as e:
        decode(data, limits=Limits(max_bytes=10))
    assert e.value.reason == "too_many_bytes"


# ---- geometry ---------------------------------------------------------------------------------------------------


def test_pad_reflects_and_tiny_images_pad_by_edge():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (37, 51, 3), dtype=np.uint8)
    frame = pad_to_multiple(arr, 4)
    assert frame.shape == (40, 52, 3) and np.array_equal(frame[37, :51], arr[35])
    assert pad_to_multiple(np.zeros((1, 1, 3), np.uint8), 4).shape == (4, 4, 3)
    assert pad_to_multiple(arr, 1, min_side=64).shape == (64, 64, 3)


def test_fit_within_and_resize():
    assert fit_within(1000, 500, 768) == (768, 384)
    assert fit_within(100, 50, 768) == (100, 50)
    photo = np.asarray(Image.open(photo_path("astronaut.png")).convert("RGB"))
    small = resize(photo, (128, 100))
    assert small.shape == (128, 100, 3) and small.dtype == np.uint8
    f = resize(np.full((10, 10), -7, np.int16), (20, 30))
    assert f.dtype == np.float32 and np.allclose(f, -7, atol=1e-3)


# ---- recompose + encode -----------------------------------------------------------------------------------------


def test_png_roundtrip_is_lossless_and_formats_have_their_magic():
    photo = decode(photo_path("astronaut.png").read_bytes()).color
    assert np.array_equal(decode(encode(photo)).color, photo)
    for fmt, magic in (("PNG", b"\x89PNG"), ("JPEG", b"\xff\xd8"), ("jpg", b"\xff\xd8"), ("WEBP", b"RIFF")):
        assert encode(photo[:16, :16], fmt=fmt).startswith(magic)
    with pytest.raises(InvalidImage, match="unsupported output format"):
        encode(photo[:8, :8], fmt="GIF")
    with pytest.raises(InvalidImage, match="WebP images are at most") as e:
        encode(np.zeros((2, 16384, 3), np.uint8), fmt="WEBP")
    assert e.value.reason == "output_too_large"


def test_eight_bit_png_writer_is_read_back_exactly_by_pillow_and_opencv():
    import cv2

    photo = decode(photo_path("astronaut.png").read_bytes()).color[:97, :131]  # odd sides: no row alignment luck
    alpha = np.random.default_rng(5).integers(0, 256, photo.shape[:2], dtype=np.uint8)
    gray = photo[..., 1]
    for pixels, a, mode in ((photo, None, "RGB"), (photo, alpha, "RGBA"), (gray, None, "L"), (gray, alpha, "LA")):
        data = encode(pixels, a)
        assert data[24:26] == bytes([8, {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}[mode]])  # IHDR depth, colour type
        im = Image.open(io.BytesIO(data))
        assert im.mode == mode
        want = pixels if a is None else np.dstack([pixels, a])
        assert np.array_equal(np.asarray(im).reshape(want.shape), want)
    from stylize.engine import imaging

    assert imaging._fast_zlib is not None  # the server extra installs ISA-L's deflate; without it PNG is 4-5x slower
    cv = cv2.imdecode(np.frombuffer(encode(photo), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv[..., ::-1], photo)
    # 16-bit colour with 8-bit alpha: the alpha is scaled to 16 bits, not stored as a near-zero value
    out = read16(encode(photo.astype(np.uint16) * 257, alpha))
    assert np.array_equal(out[..., 3], alpha.astype(np.uint16) * 257)


def test_recompose_gray_alpha_and_sixteen_bits():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 65536, (8, 8, 4), dtype=np.uint16)
    pic = decode(png16(arr))
    up = np.repeat(np.repeat(pic.color, 2, 0), 2, 1)  # stands in for a x2 network
    pixels, alpha = recompose(pic, up)
    assert pixels.dtype == np.uint16 and pixels.shape == (16, 16, 3) and alpha.shape == (16, 16)
    out = read16(encode(pixels, alpha))
    assert out.dtype == np.uint16 and out.shape == (16, 16, 4)
    assert np.array_equal(out[..., :3], pixels) and np.array_equal(out[..., 3], alpha)
    # an identity "network" gives a 16-bit input back exactly
    same, a = recompose(pic, pic.color)
    assert np.array_equal(same, arr[..., :3]) and np.array_equal(a, arr[..., 3])

    cam = decode(photo_path("camera.png").read_bytes())
    pixels, alpha = recompose(cam, cam.color)
    assert pixels.ndim == 2 and alpha is None
    assert np.array_equal(pixels, np.asarray(Image.open(photo_path("camera.png"))))
    assert Image.open(io.BytesIO(encode(pixels))).mode == "L"


def test_sixteen_bit_gray_alpha_png_is_written_as_such():
    rng = np.random.default_rng(4)
    g, a = rng.integers(0, 65536, (5, 7), dtype=np.uint16), rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    data = encode(g, a)
    assert data[24:26] == bytes([16, 4])  # IHDR: 16 bits, gray + alpha
    pic = decode(data)
    assert pic.gray and np.array_equal(257 * pic.color[..., 0].astype(np.int32) + pic.residual[..., 0], g)
    assert np.array_equal(pic.alpha, a)


def test_jpeg_flattens_alpha_on_white_and_webp_keeps_it():
    rgb = np.zeros((8, 8, 3), np.uint8)
    alpha = np.zeros((8, 8), np.uint8)
    jpeg = np.asarray(Image.open(io.BytesIO(encode(rgb, alpha, fmt="JPEG"))))
    assert jpeg.min() >= 250  # fully transparent black over white is white
    assert Image.open(io.BytesIO(encode(rgb, alpha, fmt="WEBP"))).mode == "RGBA"


def test_icc_and_dpi_carried_over_only_when_the_profile_fits():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = np.zeros((8, 8, 3), np.uint8)
    out = Image.open(io.BytesIO(encode(rgb, icc_profile=icc, dpi=(300, 300))))
    assert out.info["icc_profile"] == icc and out.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert "icc_profile" not in Image.open(io.BytesIO(encode(rgb[..., 0], icc_profile=icc))).info  # RGB profile
    jpeg = Image.open(io.BytesIO(encode(rgb, fmt="JPEG", icc_profile=icc, dpi=(72, 72))))
    assert jpeg.info["icc_profile"] == icc and jpeg.info["dpi"] == (72, 72)
    data16 = encode(np.zeros((4, 4, 3), np.uint16), icc_profile=icc, dpi=(300, 300))
    assert {b"iCCP", b"pHYs"} <= set(chunks(data16))
    back = Image.open(io.BytesIO(data16))
    assert back.info["icc_profile"] == icc and back.info["dpi"] == pytest.approx((300, 300), abs=0.01)
