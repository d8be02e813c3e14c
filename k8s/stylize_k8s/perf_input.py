"""Write the perf_analyzer input file of the load-test Job: one real photo crop, PNG-encoded.

    python -m stylize_k8s.perf_input [--size 64] [--out k8s/loadtest/input-data.json]

perf_analyzer's --input-data format: {"data": [{<input name>: {"b64": <base64>}}]}; for a BYTES tensor the base64
holds Triton's serialized form, each element prefixed with its length as 4 little-endian bytes (seen: raw PNG bytes
are read as a length of 1196314761 = "\x89PNG"). The input name is the image ensembles' encoded-image tensor from
the descriptors; the photo is scikit-image's astronaut.png (read as a file
from the installed wheel, nothing downloaded).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import json
import struct
from pathlib import Path

from stylize.contract import descriptors

from stylize_k8s import K8S


def photo_png(size: int) -> bytes:
    from PIL import Image

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-image is not installed (the `build` extra): it carries the test photo")
    img = Image.open(Path(spec.origin).parent / "data" / "astronaut.png").convert("RGB")
    left, top = 200, 80  # the face: a crop with detail, not flat background
    buf = io.BytesIO()
    img.crop((left, top, left + size, top + size)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=K8S / "loadtest" / "input-data.json")
    args = ap.parse_args(argv)
    png = photo_png(args.size)
    element = struct.pack("<I", len(png)) + png  # one BYTES element, serialized as Triton sends it
    data = {"data": [{descriptors.ENCODED_IMAGE.name: {"b64": base64.b64encode(element).decode()}}]}
    args.out.write_text(json.dumps(data) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
