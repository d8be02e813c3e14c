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
