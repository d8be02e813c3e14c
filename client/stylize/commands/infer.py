"""`stylize infer PATH... -m MODEL -o OUT`: files and folders of images through a model.

Folders are walked recursively and their sub-folder layout is kept under OUT; names become <stem><suffix>.<ext>.
Unreadable or refused files are reported at the end (exit status 1) without stopping the run; an input is never
overwritten; every output is written atomically (a temporary name, then a rename).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stylize.commands._connection import add_connection_args, make_client

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
EXTENSIONS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def plan_jobs(inputs: list[Path], out: Path, *, suffix: str = "", ext: str = "png") -> tuple[list[Job], list[Problem]]:
    """Input paths -> (jobs in a stable order, problems found before any request).

    A file argument goes to OUT/<stem><suffix>.<ext> (or to OUT itself when OUT has an image extension and there is
    exactly one input file); a folder argument keeps its layout under OUT. Hidden files and folders are skipped
    (temporary files of interrupted runs are hidden), and so is OUT when it lies inside a walked folder.
    """
    ext = ext.lower().lstrip(".")
    if ext not in EXTENSIONS:
        raise ValueError(f"--ext {ext!r}; expected one of {', '.join(EXTENSIONS)}")
    out_resolved = out.resolve()
    single_file_out = (len(inputs) == 1 and inputs[0].is_file() and out.suffix.lower() in IMAGE_SUFFIXES
                       and not out.is_dir())
    pairs: list[tuple[Path, Path]] = []
    problems: list[Problem] = []
    for arg in inputs:
        if arg.is_dir():
            root = arg
            # OUT inside the walked folder holds our own earlier outputs: not inputs
            skip_out = out_resolved != root.resolve() and root.resolve() in out_resolved.parents
            for f in sorted(root.rglob("*")):
                if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES or _is_hidden(f, root):
                    continue
                if skip_out and (out_resolved == f.resolve() or out_resolved in f.resolve().parents):
                    continue
                rel = f.relative_to(root)
                pairs.append((f, out / rel.parent / f"{rel.stem}{suffix}.{ext}"))
        elif arg.is_file():
            pairs.append((arg, out if single_file_out else out / f"{arg.stem}{suffix}.{ext}"))
        elif arg.exists():
            problems.append(Problem(arg, "not a regular file or folder"))
        else:
            problems.append(Problem(arg, "no such file or folder"))

    input_set = {src.resolve() for src, _ in pairs}
    taken: dict[Path, Path] = {}
    jobs: list[Job] = []
    for src, dst in pairs:
        key = dst.resolve()
        if key in input_set:
            problems.append(Problem(src, f"refusing to overwrite an input ({dst}); choose another -o, --suffix or --ext"))
        elif key in taken:
            problems.append(Problem(src, f"same output name as {taken[key]} ({dst}); use --ext or rename one"))
        else:
            taken[key] = src
            jobs.append(Job(src, dst))
    return jobs, problems


def ensure_format(data: bytes, fmt: str, quality: int) -> bytes:
    """Re-encode locally when the server answered in another format (servers before issue 3 always send PNG)."""
    from stylize.client import image_format

    if image_format(data) == fmt:
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return _encode(im.convert("RGB"), fmt, quality)


def _encode(image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, "PNG", compress_level=6)
    else:
        image.save(out, fmt, quality=quality)
    return out.getvalue()


def side_by_side(src: bytes, result: bytes, fmt: str, quality: int) -> bytes:
    """Input (resized to the output's height, orientation applied as the server does) left, output right."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(result)) as im:
        right = im.convert("RGB")
    with Image.open(io.BytesIO(src)) as im:
        left = ImageOps.exif_transpose(im).convert("RGB")
    if left.height != right.height:
        width = max(1, round(left.width * right.height / left.height))
        left = left.resize((width, right.height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (left.width + right.width, right.height))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return _encode(canvas, fmt, quality)


def run(args: argparse.Namespace) -> int:
    from stylize.client import write_atomic
    from stylize.errors import ServerUnavailable, StylizeError

    fmt = EXTENSIONS[args.ext.lower()]
    jobs, problems = plan_jobs([Path(p) for p in args.paths], Path(args.output), suffix=args.suffix, ext=args.ext)
    failed: list[Problem] = list(problems)
    if not jobs:
        for p in failed:
            print(f"error: {p.path}: {p.reason}", file=sys.stderr)
        print("nothing to do: no image found", file=sys.stderr)
        return 1

    options = {"output_format": fmt, "quality": args.quality if fmt != "PNG" else None,
               "outscale": args.outscale, "max_side": args.max_side, "tile_size": args.tile_size}
    from stylize.client import build_options

    try:
        build_options(options, args.model)
    except StylizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = seen = 0
    aborted: str | None = None
    t0 = time.monotonic()
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="img", desc=args.model, disable=True if args.no_progress else None)
    with make_client(args) as client:
        results = client.infer_many((job.src for job in jobs), args.model, concurrency=args.concurrency,
                                    return_exceptions=True, **options)
        try:
            for job, result in zip(jobs, results):
                bar.update(1)
                seen += 1
                if isinstance(result, StylizeError):
                    failed.append(Problem(job.src, getattr(result, "reason", None) or str(result)))
                    if isinstance(result, ServerUnavailable):
                        aborted = str(result)  # retries exhausted: every following file would fail the same way
                        break
                    bar.set_postfix(failed=len(failed))
                    continue
                try:
                    data = ensure_format(result, fmt, args.quality)
                    if args.side_by_side:
                        data = side_by_side(job.src.read_bytes(), data, fmt, args.quality)
                    write_atomic(job.dst, data)
                    written += 1
                except OSError as e:
                    failed.append(Problem(job.src, f"cannot write {job.dst}: {e.strerror or e}"))
        finally:
            results.close()
            bar.close()
        stats = client.stats.summary()

    seconds = time.monotonic() - t0
    not_done = len(jobs) - seen
    print(f"{written} of {len(jobs)} images written to {args.output} in {seconds:.1f} s "
          f"({written / seconds if seconds > 0 else 0:.2f} img/s); {stats}")
    if aborted:
        print(f"stopped: {aborted}; {not_done} images not processed", file=sys.stderr)
    if failed:
        print(f"{len(failed)} failed:", file=sys.stderr)
        for p in failed:
            print(f"  {p.path}: {p.reason}", file=sys.stderr)
    return 1 if failed or aborted else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("infer", help="run images and folders of images through a model",
                              description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders (walked recursively)")
    p.add_argument("-m", "--model", default="animeganv2", help="model id (see `stylize models`; default %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (or an image file name when PATH is a single file)")
    p.add_argument("--suffix", default="", help="appended to each output stem, e.g. _anime")
    p.add_argument("--ext", default="png", type=str.lower, choices=sorted(EXTENSIONS),
                   help="output format/extension (default %(default)s)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1..100 (default %(default)s)")
    p.add_argument("--outscale", type=float, default=None,
                   help="output side / input side (default: the model's scale; the server resizes)")
    p.add_argument("--max-side", type=int, default=None,
                   help="longest side the network sees (models with a configured bound, e.g. animeganv2)")
    p.add_argument("--tile-size", type=int, default=None, help="smaller tiles than configured (tiled models)")
    p.add_argument("--side-by-side", action="store_true", help="write input and output next to each other")
    p.add_argument("-j", "--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_args(p)
    p.set_defaults(func=run)
