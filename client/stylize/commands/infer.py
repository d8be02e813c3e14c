"""`stylize infer PATH... -m MODEL -o OUT`: files and folders of images through a model.

Folders are walked recursively and their sub-folder layout is kept under OUT; names become <stem><suffix>.<ext>
(with --side-by-side also <stem><suffix>_side_by_side.<ext>: input and output next to each other). ``--ext auto``
keeps each input's format and extension, as Real-ESRGAN's option does (BMP and TIFF, which the server does not
write, come back as PNG and are written losslessly in their own format here).
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
from stylize.contract.descriptors import DEFAULT_IMAGE_MODEL

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
EXTENSIONS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}  # what the server writes
AUTO = "auto"  # --ext auto: each output in its input's format (or, for one file, in the format of the -o name)
# every format the inputs can have -> how it is written (BMP and TIFF: the server answers PNG, re-encoded here)
FILE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
LOCAL_FORMATS = frozenset({"BMP", "TIFF"})  # written from the server's PNG: lossless


def file_format(path: Path) -> str:
    """How an output path is written (from its extension; --ext auto)."""
    return FILE_FORMATS[path.suffix.lower()]


def wire_format(fmt: str) -> str:
    """The format to ask the server for when writing ``fmt`` (the server writes PNG, JPEG and WebP)."""
    return "PNG" if fmt in LOCAL_FORMATS else fmt


SIDE_BY_SIDE_SUFFIX = "_side_by_side"  # the composite written next to the result (as `stylize demo` names it)


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path
    side_by_side: Path | None = None  # --side-by-side: where the input | output composite goes


def side_by_side_path(dst: Path) -> Path:
    return dst.with_name(f"{dst.stem}{SIDE_BY_SIDE_SUFFIX}{dst.suffix}")


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str
    skipped: bool = False  # a file in a walked folder that is not an image this command reads: listed, not an error


def model_problem(model: str) -> str | None:
    """Why ``-m model`` cannot take image files, with what to use instead (None: an image model, or a name the
    descriptors do not know, which the server answers for)."""
    from stylize.contract.descriptors import REGISTRY

    for d in REGISTRY.values():
        if model in (d.id, d.int8_ensemble):
            if d.window:
                return (
                    f"{model} is a video model (windows of {d.window} frames in, frames out), not an image "
                    f"model: use `stylize video CLIP -o OUT -m {model}`"
                )
            return None
        if model in (d.net_model, d.int8_model, d.trt_model):
            image_model = d.int8_ensemble if model == d.int8_model else d.id
            use = "`stylize video`" if d.window else f"`-m {image_model}` for image files, `stylize video` for clips"
            return (
                f"{model} is a raw-frame network model (uint8 frames in and out, no image decoding or "
                f"encoding): use {use}"
            )
        if model in (d.image_model, d.int8_image_model):
            return f"{model} is a step inside the {d.id} ensemble: use `-m {d.id}`"
    return None


def _auto_suffix(src: Path) -> str:
    """--ext auto: the input's extension, except for a BMP with an alpha channel, which gets .png (a BMP result
    cannot hold the alpha readably; Real-ESRGAN writes its RGBA results as PNG too)."""
    if src.suffix.lower() == ".bmp":
        from PIL import Image

        try:
            with Image.open(src) as im:  # reads the header only
                if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                    return ".png"
        except (OSError, ValueError):
            pass  # unreadable: the server says why
    return src.suffix


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def plan_jobs(
    inputs: list[Path], out: Path, *, suffix: str = "", ext: str = "png", side_by_side: bool = False
) -> tuple[list[Job], list[Problem]]:
    """Input paths -> (jobs in a stable order, problems found before any request).

    A file argument goes to OUT/<stem><suffix>.<ext> (or to OUT itself when OUT has an image extension and there is
    exactly one input file); a folder argument keeps its layout under OUT. ``ext`` "auto": each output keeps
    its input's extension as written (photo.JPG -> photo<suffix>.JPG; a BMP with alpha gets .png). Hidden files
    and folders are skipped (temporary files of interrupted runs are hidden), and so is OUT when it lies inside a
    walked folder.
    ``side_by_side``: each job also writes :func:`side_by_side_path` of its output (checked like the output).
    """
    ext = ext.lower().lstrip(".")
    if ext not in EXTENSIONS and ext != AUTO:
        raise ValueError(f"--ext {ext!r}; expected one of {', '.join([*EXTENSIONS, AUTO])}")

    def named(f: Path, stem: str) -> str:
        return f"{stem}{suffix}{_auto_suffix(f) if ext == AUTO else '.' + ext}"

    out_resolved = out.resolve()
    single_file_out = (
        len(inputs) == 1 and inputs[0].is_file() and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()
    )
    pairs: list[tuple[Path, Path]] = []
    problems: list[Problem] = []
    for arg in inputs:
        if arg.is_dir():
            root = arg
            # OUT inside the walked folder holds our own earlier outputs: not inputs
            skip_out = out_resolved != root.resolve() and root.resolve() in out_resolved.parents
            for f in sorted(root.rglob("*")):
                if not f.is_file() or _is_hidden(f, root):
                    continue
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    problems.append(
                        Problem(
                            f,
                            f"skipped: not an image file this command reads (reads "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))})",
                            skipped=True,
                        )
                    )
                    continue
                if skip_out and (out_resolved == f.resolve() or out_resolved in f.resolve().parents):
                    continue
                rel = f.relative_to(root)
                pairs.append((f, out / rel.parent / named(f, rel.stem)))
        elif arg.is_file():
            pairs.append((arg, out if single_file_out else out / named(arg, arg.stem)))
        elif arg.exists():
            problems.append(Problem(arg, "not a regular file or folder"))
        else:
            problems.append(Problem(arg, "no such file or folder"))

    input_set = {src.resolve() for src, _ in pairs}
    taken: dict[Path, Path] = {}
    jobs: list[Job] = []
    for src, dst in pairs:
        outputs = [dst, side_by_side_path(dst)] if side_by_side else [dst]
        problem = None
        for path in outputs:
            key = path.resolve()
            if key in input_set:
                problem = f"refusing to overwrite an input ({path}); choose another -o, --suffix or --ext"
            elif key in taken:
                problem = f"same output name as {taken[key]} ({path}); use --ext or rename one"
            if problem:
                break
        if problem:
            problems.append(Problem(src, problem))
            continue
        for path in outputs:
            taken[path.resolve()] = src
        jobs.append(Job(src, dst, outputs[1] if side_by_side else None))
    return jobs, problems


def ensure_format(data: bytes, fmt: str, quality: int) -> bytes:
    """Re-encode locally when the server answered in another format: BMP and TIFF (``--ext auto``; the server's PNG
    is written losslessly, gray, alpha, 16 bits, ICC profile and DPI kept where the format holds them), or a server
    before issue 3, which always sends PNG."""
    from stylize.sdk.request import image_format

    if image_format(data) == fmt:
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if fmt in LOCAL_FORMATS:
            return _encode_lossless(im, fmt)
        return _encode(im.convert("RGB"), fmt, quality)


def _encode_lossless(im, fmt: str) -> bytes:
    import numpy as np
    from PIL import Image

    info = {k: im.info[k] for k in ("icc_profile", "dpi") if im.info.get(k)}
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if fmt == "BMP" and im.mode not in ("1", "L", "RGB"):  # 8 bits a channel, no readable alpha
        im = (
            Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8), "L")
            if im.mode.startswith("I")
            else im.convert("RGB")
        )
    out = io.BytesIO()
    im.save(out, fmt, **info)
    return out.getvalue()


def _encode(image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, "PNG", compress_level=6)
    elif fmt in LOCAL_FORMATS:
        return _encode_lossless(image, fmt)
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
    from stylize.contract.errors import ServerUnavailable, StylizeError
    from stylize.contract.fileio import write_atomic

    auto = args.ext.lower() == AUTO
    jobs, problems = plan_jobs(
        [Path(p) for p in args.paths],
        Path(args.output),
        suffix=args.suffix,
        ext=args.ext,
        side_by_side=args.side_by_side,
    )
    unusable = model_problem(args.model)
    if unusable:
        print(f"error: {unusable}", file=sys.stderr)
        return 2
    skipped = [p for p in problems if p.skipped]
    failed: list[Problem] = [p for p in problems if not p.skipped]
    for p in skipped:
        print(f"{p.path}: {p.reason}", file=sys.stderr)
    if not jobs:
        for p in failed:
            print(f"error: {p.path}: {p.reason}", file=sys.stderr)
        print("nothing to do: no image found", file=sys.stderr)
        return 1

    # the format each output is written in; jobs go to the server in groups of the format they ask it for
    formats = {job: file_format(job.dst) if auto else EXTENSIONS[args.ext.lower()] for job in jobs}
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(wire_format(formats[job]), []).append(job)
    from stylize.sdk.request import build_options

    def options_for(wire: str) -> dict:
        return {
            "output_format": wire,
            "quality": args.quality if wire != "PNG" else None,
            "outscale": args.outscale,
            "max_side": args.max_side,
            "tile_size": args.tile_size,
        }

    try:
        for wire in groups:
            build_options(options_for(wire), args.model)
    except StylizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = seen = 0
    aborted: str | None = None
    t0 = time.monotonic()
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="img", desc=args.model, disable=True if args.no_progress else None)
    with make_client(args) as client:
        try:
            for wire, group in groups.items():
                if aborted:
                    break
                results = client.infer_many(
                    (job.src for job in group),
                    args.model,
                    concurrency=args.concurrency,
                    return_exceptions=True,
                    **options_for(wire),
                )
                try:
                    for job, result in zip(group, results):
                        bar.update(1)
                        seen += 1
                        if isinstance(result, StylizeError):
                            failed.append(Problem(job.src, getattr(result, "reason", None) or str(result)))
                            if isinstance(result, ServerUnavailable):
                                aborted = str(result)  # retries exhausted: every following file would fail too
                                break
                            bar.set_postfix(failed=len(failed))
                            continue
                        target, fmt = job.dst, formats[job]
                        try:
                            data = ensure_format(result, fmt, args.quality)
                            write_atomic(job.dst, data)
                            if job.side_by_side is not None:
                                target = job.side_by_side
                                write_atomic(target, side_by_side(job.src.read_bytes(), data, fmt, args.quality))
                            written += 1
                        except OSError as e:
                            failed.append(Problem(job.src, f"cannot write {target}: {e.strerror or e}"))
                finally:
                    results.close()
        finally:
            bar.close()
        stats = client.stats.summary()

    seconds = time.monotonic() - t0
    not_done = len(jobs) - seen
    pinned = f" (network version {args.model_version})" if getattr(args, "model_version", None) else ""
    print(
        f"{written} of {len(jobs)} images written to {args.output}{pinned} in {seconds:.1f} s "
        f"({written / seconds if seconds > 0 else 0:.2f} img/s); {stats}"
    )
    if aborted:
        print(f"stopped: {aborted}; {not_done} images not processed", file=sys.stderr)
    if failed:
        print(f"{len(failed)} failed:", file=sys.stderr)
        for p in failed:
            print(f"  {p.path}: {p.reason}", file=sys.stderr)
    return 1 if failed or aborted else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "infer", help="run images and folders of images through a model", description=__doc__.splitlines()[0]
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders (walked recursively)")
    p.add_argument(
        "-m", "--model", default=DEFAULT_IMAGE_MODEL, help="model id (see `stylize models`; default %(default)s)"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output folder (or an image file name when PATH is a single file)",
    )
    p.add_argument("--suffix", default="", help="appended to each output stem, e.g. _anime")
    p.add_argument(
        "--ext",
        default="png",
        type=str.lower,
        choices=[*sorted(EXTENSIONS), AUTO],
        help="output format/extension; auto keeps each input's (BMP/TIFF written losslessly from the "
        "server's PNG; default %(default)s)",
    )
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality 1..100 (default %(default)s)")
    p.add_argument(
        "--outscale",
        type=float,
        default=None,
        help="output side / input side (default: the model's scale; the server resizes)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="longest side the network sees (models with a configured bound, e.g. animeganv2)",
    )
    p.add_argument("--tile-size", type=int, default=None, help="smaller tiles than configured (tiled models)")
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help=f"also write input and output next to each other (<name>{SIDE_BY_SIDE_SUFFIX}.<ext>)",
    )
    p.add_argument("-j", "--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_args(p)
    p.set_defaults(func=run)
