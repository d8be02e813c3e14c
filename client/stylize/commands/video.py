"""`stylize video SRC -o DST -m MODEL`: upscale (or stylize) a video, keeping every stream, timestamp and tag.

An interrupted run (Ctrl-C, a crash) continues from its last finished segment when run again."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stylize.commands._connection import add_connection_args, make_client
from stylize.contract.descriptors import DEFAULT_VIDEO_MODEL


def output_path(src: Path, output: Path, model: str) -> Path:
    """-o may name a folder: then the file is <folder>/<stem>_<model><ext> (.mp4 unless the input's ext takes H.264)."""
    from stylize.sdk.video import VIDEO_SUFFIXES

    if output.is_dir():
        ext = src.suffix.lower() if src.suffix.lower() in VIDEO_SUFFIXES else ".mp4"
        return output / f"{src.stem}_{model}{ext}"
    return output


def work_folder(dst: Path) -> Path:
    from stylize.sdk.video_container import SegmentStore

    return SegmentStore.folder(dst)


def run(args: argparse.Namespace) -> int:
    from stylize.contract.errors import StylizeError

    if args.live:
        if args.outscale is not None or args.fps is not None:
            print("error: --outscale and --fps apply to files, not to --live", file=sys.stderr)
            return 2
        return _run_live(args)
    src = Path(args.src)
    dst = output_path(src, Path(args.output), args.model)
    with make_client(args) as client:
        try:
            report = client.upscale_video(
                src,
                dst,
                args.model,
                version=args.model_version,
                codec=args.codec,
                bit_depth=args.bit_depth,
                crf=args.crf,
                preset=args.preset or "medium",
                concurrency=args.concurrency,
                batch=args.batch,
                window_margin=args.window_margin,
                segment_frames=args.segment_frames,
                tile=args.tile,
                outscale=args.outscale,
                fps=args.fps,
                resume=not args.no_resume,
                progress=False if args.no_progress else None,
            )
        except StylizeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            if not args.no_resume and work_folder(dst).is_dir():
                print(
                    f"finished segments kept in {work_folder(dst)}: the same command continues from there",
                    file=sys.stderr,
                )
            raise
    print(report.summary())
    return 0


def _run_live(args: argparse.Namespace) -> int:
    """`--live`: stylize.sdk.video_live; the summary goes to stderr (stdout may be the stream itself)."""
    from stylize.contract.errors import StylizeError
    from stylize.sdk.video_live import run_live

    with make_client(args) as client:
        try:
            report = run_live(args, client)
        except StylizeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(report.summary(), file=sys.stderr if args.output == "-" else sys.stdout)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "video",
        help="upscale or stylize a video (every stream, timestamp and tag kept)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("src", metavar="SRC", help="input video (anything FFmpeg reads)")
    p.add_argument(
        "-o", "--output", required=True, metavar="DST", help="output .mp4/.mkv/.mov/.m4v (.webm: vp9, av1), or a folder"
    )
    p.add_argument("-m", "--model", default=DEFAULT_VIDEO_MODEL, help="model id (default %(default)s)")
    from stylize.sdk.video_container import CODECS, PRESETS

    p.add_argument(
        "--codec",
        default="h264",
        choices=tuple(CODECS),
        help="output codec: "
        + ", ".join(f"{c.name} ({c.encoder})" for c in CODECS.values())
        + " (default %(default)s)",
    )
    p.add_argument(
        "--bit-depth",
        type=int,
        choices=(8, 10),
        default=None,
        help="output bits per sample (default: 10 for input with more than 8 bits, else 8)",
    )
    p.add_argument(
        "--crf",
        type=int,
        default=None,
        help="constant quality, 0 (best) .. 51 (H.264/H.265) or 63 (VP9/AV1); default: "
        + ", ".join(f"{c.name} {c.crf_default}" for c in CODECS.values()),
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=PRESETS,
        help="x264-style speed/size trade-off, mapped onto each encoder (default medium; --live veryfast)",
    )
    p.add_argument(
        "--segment-frames", type=int, default=None, help="frames per resumable segment (default: 4 seconds of the clip)"
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over instead of continuing an interrupted run, and keep nothing if this one fails",
    )
    p.add_argument("-j", "--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="frames per request (default %(default)s)")
    p.add_argument(
        "--window-margin",
        type=int,
        default=None,
        help="windowed models: context frames dropped on each side of a window (default window//3)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="windowed models: frames larger than TILE x TILE go in overlapping tiles (default 256; 0: never)",
    )
    p.add_argument(
        "--outscale",
        type=float,
        default=None,
        metavar="S",
        help="output sides = S x the input's: the network's frames are resized (Lanczos; default: the model's scale)",
    )
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        metavar="F",
        help="output frame rate: every frame kept, 1/F apart (the video lasts frames/F; audio keeps its "
        "timing; default: the source's timestamps)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from stylize.sdk.video_live import add_live_args

    add_live_args(p)
    add_connection_args(p)
    p.set_defaults(func=run)
