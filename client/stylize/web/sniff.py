"""What an upload is, from its first bytes: a video container goes the video way, anything else is a photo for
the server to judge (its image step says why a file is not an image it can read; the page shows that reason)."""

from __future__ import annotations

from typing import NamedTuple

HEAD_BYTES = 64  # enough for every signature below

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}  # ISO-BMFF stills


class Kind(NamedTuple):
    kind: str  # "image" | "video"
    format: str | None  # "PNG", "MP4", ... (None: unknown; sent to the server as an image)


def sniff(head: bytes) -> Kind:
    """Kind and format of a file from its first :data:`HEAD_BYTES` bytes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Kind("image", "PNG")
    if head.startswith(b"\xff\xd8\xff"):
        return Kind("image", "JPEG")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Kind("image", "WEBP")
    if head[:2] == b"BM":
        return Kind("image", "BMP")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Kind("image", "TIFF")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Kind("image", "GIF")
    if head[4:8] == b"ftyp":
        if head[8:12] in _HEIF_BRANDS:
            return Kind("image", "HEIF")
        return Kind("video", "MOV" if head[8:12] == b"qt  " else "MP4")
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return Kind("video", "WEBM" if b"webm" in head else "MKV")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Kind("video", "AVI")
    if head[:4] == b"\x00\x00\x01\xba":
        return Kind("video", "MPEG-PS")
    return Kind("image", None)


def image_media_type(data: bytes) -> str:
    """Content-Type of an encoded result, from its bytes."""
    fmt = sniff(data[:HEAD_BYTES]).format
    return {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}.get(fmt or "", "application/octet-stream")
