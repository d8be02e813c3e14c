"""`stylize video SRC -o DST -m MODEL`: upscale (or stylize) a video, keeping its sound, frame rate and frame count."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stylize.commands._connection import add_connection_args, make_client


def output_path(src: Path, output: Path, model: str) -> Path:
    """-o may name a folder: then the file is <folder>/<stem>_<model><ext> (.mp4 unless the input's ext takes H.264)."""
    from stylize.video import VIDEO_SUFFIXES

    if output.is_dir():
        ext = src.suffix.lower() if src.suffix.lower() in VIDEO_SUFFIXES else ".mp4"
        return output / f"{src.stem}_{model}{ext}"
    return output


def run(args: argparse.Namespace) -> int:
    from stylize.errors import StylizeError

    src = Path(args.src)
    dst = output_path(src, Path(args.output), args.model)
    with make_client(args) as client:
        try:
            report = client.upscale_video(src, dst, args.model, version=args.model_version, crf=args.crf,
                                          preset=args.preset, concurrency=args.concurrency, batch=args.batch,
                                          window_margin=args.window_margin,
                                          progress=False if args.no_progress else None)
        except StylizeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(report.summary())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("video", help="upscale or stylize a video (audio, fps and frame count kept)",
                              description=__doc__.splitlines()[0])
    p.add_argument("src", metavar="SRC", help="input video (anything FFmpeg reads)")
    p.add_argument("-o", "--output", required=True, metavar="DST", help="output .mp4/.mkv/.mov/.m4v, or a folder")
    p.add_argument("-m", "--model", default="animevideo_x2", help="model id (default %(default)s)")
    p.add_argument("--crf", type=int, default=18, help="x264 quality, 0 (lossless) .. 51 (default %(default)s)")
    p.add_argument("--preset", default="medium",
                   choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                            "veryslow"), help="x264 speed/size trade-off (default %(default)s)")
    p.add_argument("-j", "--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="frames per request (default %(default)s)")
    p.add_argument("--window-margin", type=int, default=None,
                   help="windowed models: context frames dropped on each side of a window (default window//3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_args(p)
    p.set_defaults(func=run)
