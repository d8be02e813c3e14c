"""Real photos shipped inside the scikit-image wheel (read as files; nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

DEFAULT_PHOTO = "astronaut.png"


class PhotoNotFound(FileNotFoundError):
    pass


def photo_path(name: str = DEFAULT_PHOTO) -> Path:
    """Path of a photo in scikit-image's data folder, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise PhotoNotFound("scikit-image is not installed (pip install 'stylize[build]'); it carries the test photos")
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        raise PhotoNotFound(f"{name} is not in {path.parent}")
    return path


def load_rgb(name: str = DEFAULT_PHOTO) -> np.ndarray:
    from PIL import Image

    with Image.open(photo_path(name)) as im:
        return np.asarray(im.convert("RGB"))


def real_photo_crop(h: int, w: int, *, name: str = DEFAULT_PHOTO, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """An h x w x 3 uint8 crop around the centre of a real photo (the face, for astronaut.png)."""
    img = load_rgb(name)
    H, W = img.shape[:2]
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} larger than {name} ({H}x{W})")
    top = min(max((H - h) // 3 + offset[0], 0), H - h)
    left = min(max((W - w) // 2 + offset[1], 0), W - w)
    return np.ascontiguousarray(img[top : top + h, left : left + w])


def pan_sequence(frames: int, side: int, *, name: str = DEFAULT_PHOTO, step: tuple[int, int] = (2, 3)) -> np.ndarray:
    """``frames`` x side x side x 3 uint8: a camera pan over a real photo (each frame the crop ``step`` pixels
    further down and right), the ground truth of video super-resolution checks."""
    img = load_rgb(name)
    H, W = img.shape[:2]
    dy, dx = step
    if side + dy * (frames - 1) > H or side + dx * (frames - 1) > W:
        raise ValueError(f"a {frames}-frame pan of {side}^2 crops does not fit in {name} ({H}x{W})")
    top = (H - side - dy * (frames - 1)) // 2
    left = (W - side - dx * (frames - 1)) // 2
    return np.stack(
        [img[top + t * dy : top + t * dy + side, left + t * dx : left + t * dx + side] for t in range(frames)]
    )


def bicubic_resize(frames: np.ndarray, factor: float) -> np.ndarray:
    """Each HxWx3 uint8 frame resized by ``factor`` with Pillow's bicubic filter (antialiased when shrinking: the
    usual way low-resolution inputs are made from ground truth, and the baseline upscaler)."""
    from PIL import Image

    h, w = frames.shape[-3:-1]
    size = (round(w * factor), round(h * factor))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) for f in frames])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of one shape (inf when equal)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def centre_square(name: str, side: int) -> np.ndarray:
    """The centre square of a real photo resized (bicubic) to ``side`` x ``side``, uint8 HxWx3 (e.g. the 256x256 an
    AnimeGANv2 TFLite file was converted for)."""
    from PIL import Image

    with Image.open(photo_path(name)) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        return np.asarray(im.crop(box).resize((side, side), Image.BICUBIC))
