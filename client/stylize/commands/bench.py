"""`stylize bench`: PyTorch eager, ONNX Runtime in-process, the served ensemble and the INT8 variant side by side,
with the machine's GEMM peak and achieved GFLOP/s; writes a report under loadtest/results/ (``--update-docs``:
the tracked docs/performance.md). Needs the `build` extra (torch)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

DEFAULT_DOC = Path("docs/performance.md")
REPORTS = Path("loadtest/results")  # git-ignored: a run's report lands here unless --update-docs


def _case(text: str) -> tuple[str, int]:
    model, sep, side = text.partition(":")
    if not sep or not side.isdigit():
        raise argparse.ArgumentTypeError(f"expected MODEL:SIDE (e.g. animevideo_x4:128), got {text!r}")
    return model, int(side)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="side-by-side benchmark (PyTorch, ONNX Runtime, served, INT8) -> docs/performance.md",
        description=__doc__.splitlines()[0],
        epilog="The full run takes about half an hour on 2 cores (esrgan_x4 at 256² dominates); --quick takes a few "
        "minutes. Build the INT8 variants first: `stylize build --int8`.",
    )
    p.add_argument(
        "--model-repository", type=Path, default=Path(os.environ.get("STYLIZE_MODEL_REPOSITORY", "model_repository"))
    )
    p.add_argument(
        "--url", default=None, help="measure this running server (gRPC host:port) instead of starting a local one"
    )
    p.add_argument(
        "--case",
        dest="cases",
        type=_case,
        action="append",
        metavar="MODEL:SIDE",
        help="a network and input side (repeatable; default: the issue's set)",
    )
    p.add_argument("--quick", action="store_true", help="three light cases, exactly 2 rounds (a smoke run)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 2)")
    p.add_argument("--seconds", type=float, default=2.0, help="minimum in-process fp32 time per round")
    p.add_argument("--in-flight", type=int, default=2, help="requests in flight for the served runners")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads in-process (default: the cores)")
    p.add_argument(
        "--no-layouts",
        action="store_true",
        help="skip comparing served image step layouts (instances x threads; default: on for the full set)",
    )
    p.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="markdown to write (default: loadtest/results/bench-<time>/performance.md)",
    )
    p.add_argument(
        "--update-docs",
        action="store_true",
        help=f"write the project's tracked {DEFAULT_DOC} (and its plots) instead of a report folder",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="raw results (default: next to the doc, in the folder of its plots)"
    )
    p.add_argument("--from-json", type=Path, default=None, help="re-render the doc from saved results, no measuring")
    p.add_argument(
        "--section",
        choices=("openvino",),
        default=None,
        help="replace only this section of an existing doc (a reduced run next to a full run's tables)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from stylize.loadtest import bench, bench_report
    except ModuleNotFoundError as e:
        print(f"stylize bench needs the build extra (torch, onnx): {e}", file=sys.stderr)
        return 2

    args.doc = doc_path(args)
    if args.from_json:
        result = bench_report.load_json(args.from_json)
        doc = (
            bench_report.write_section(result, args.doc)
            if args.section
            else bench_report.write(result, args.doc, results_file=args.from_json)
        )
        print(f"wrote {doc}")
        return 0
    settings = settings_from_args(args)
    argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "bench" else []
    command = "stylize bench " + " ".join(shlex.quote(a) for a in argv)
    try:
        result = bench.run_bench(settings, command=command.strip(), log=lambda s: print(s, flush=True))
    except bench.BenchError as e:
        print(f"stylize bench: {e}", file=sys.stderr)
        return 2
    json_path = bench_report.save_json(
        result,
        args.json or args.doc.parent / args.doc.stem / (f"bench-{args.section}.json" if args.section else "bench.json"),
    )
    doc = (
        bench_report.write_section(result, args.doc)
        if args.section
        else bench_report.write(result, args.doc, results_file=json_path)
    )
    print(f"\nwrote {doc} and {json_path}")
    return 0


def settings_from_args(args: argparse.Namespace):
    from stylize.loadtest import bench

    cases = tuple(args.cases) if args.cases else (bench.QUICK_CASES if args.quick else bench.DEFAULT_CASES)
    rounds = args.rounds or (2 if args.quick else 3)
    return bench.BenchSettings(
        repository=args.model_repository,
        url=args.url,
        cases=cases,
        rounds=rounds,
        seconds_per_round=args.seconds,
        in_flight=args.in_flight,
        # --quick (and an explicit --rounds) means exactly that many rounds; the full run adds rounds while a case
        # has time left
        **({"max_rounds": rounds} if args.quick or args.rounds else {}),
        threads=args.threads or len(os.sched_getaffinity(0)),
        layout_cases=() if (args.no_layouts or args.quick or args.cases) else bench.LAYOUT_CASES,
    )


def doc_path(args: argparse.Namespace) -> Path:
    """--doc, else the tracked doc with --update-docs, else a new report folder under loadtest/results/."""
    if args.doc is not None:
        return args.doc
    return DEFAULT_DOC if args.update_docs else REPORTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}" / DEFAULT_DOC.name
