"""`stylize loadtest [SCENARIO|SET ...]`: perf_analyzer load tests against a running server (or one it starts),
with CSV/JSON results, PNG plots, a markdown report and, for capacity sets, the input of the k8s capacity plan."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from stylize.sdk.connection import default_admin_key, default_url

DEFAULT_SETS = ("ensembles", "networks", "rates", "int8", "capacity")  # the full set; `quick` is for CI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "loadtest",
        help="load-test the server with perf_analyzer (report, plots, capacity input)",
        description=__doc__.splitlines()[0],
        epilog="Examples: `stylize loadtest --quick --serve` (CI's set, own server); `stylize loadtest capacity "
        "--serve` (writes loadtest/results/capacity.json for the capacity plan, python -m stylize_k8s.plan); `stylize loadtest "
        "animevideo_x4_png128 --url triton.example:8001`.",
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenario or set names (default: {' '.join(DEFAULT_SETS)}; see --list)",
    )
    p.add_argument("--quick", action="store_true", help="the quick set CI runs (a few minutes at most)")
    p.add_argument("--list", action="store_true", help="list the sets and scenarios, then exit")
    p.add_argument(
        "--url", default=default_url(), help="gRPC endpoint host:port (default: $STYLIZE_URL, else %(default)s)"
    )
    p.add_argument(
        "--http-url",
        default=None,
        metavar="HOST:PORT",
        help="HTTP endpoint of the same server (default: --url's host, port 8000): perf_analyzer runs "
        "over HTTP when $STYLIZE_ADMIN_KEY is set (the model config it reads is an admin API)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="start a local server on --model-repository for the run (its start-up time is measured: "
        "the capacity plan needs it) and stop it afterwards",
    )
    p.add_argument(
        "--model-repository", type=Path, default=Path(os.environ.get("STYLIZE_MODEL_REPOSITORY", "model_repository"))
    )
    p.add_argument("--scenarios", type=Path, default=None, help="scenario folder (default: loadtest/scenarios)")
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: loadtest/results/<UTC time>)")
    p.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="also copy report.md and the plots here (e.g. loadtest/reports/<name> to commit them)",
    )
    p.add_argument(
        "--capacity-out",
        type=Path,
        default=None,
        help="where the capacity file goes (default: loadtest/results/capacity.json)",
    )
    p.add_argument("--measurement-ms", type=int, default=None, help="override every scenario's window")
    p.add_argument(
        "--from-results",
        type=Path,
        default=None,
        metavar="DIR",
        help="re-render report.md and the plots of a finished run (its results.json), no measuring",
    )
    p.set_defaults(func=run)


def _publish(report: Path, out: Path, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(report, report_dir / "report.md")
    if (out / "plots").is_dir():
        shutil.copytree(out / "plots", report_dir / "plots", dirs_exist_ok=True)
    print(f"report copied to {report_dir}")


def _command_line(argv: list[str]) -> str:
    return "stylize loadtest " + " ".join(shlex.quote(a) for a in argv)


def run(args: argparse.Namespace) -> int:
    from stylize import loadtest as lt
    from stylize.loadtest.scenarios import with_overrides

    try:
        sets = lt.load_all(args.scenarios or lt.scenarios_dir())
    except lt.ScenarioError as e:
        print(f"stylize loadtest: {e}", file=sys.stderr)
        return 2
    if args.list:
        for s in sets.values():
            print(f"{s.name}: {s.description}")
            for sc in s.scenarios:
                levels = ",".join(f"{x:g}" for x in sc.levels)
                print(f"  {sc.name:<36} {sc.triton_model:<24} {sc.input_label:<18} {sc.mode} {levels}")
        return 0
    if args.from_results:
        from stylize.loadtest.runner import load_results

        result = load_results(args.from_results / "results.json")
        report = lt.write_report(result, args.from_results)
        print(f"report: {report}")
        if args.report_dir:
            _publish(report, args.from_results, args.report_dir)
        return 0
    names = list(args.names) + ([lt.QUICK_SET] if args.quick else [])
    if not names:
        names = [n for n in DEFAULT_SETS if n in sets]
    try:
        scenarios = lt.select(sets, names)
    except lt.ScenarioError as e:
        print(f"stylize loadtest: {e}", file=sys.stderr)
        return 2
    if args.measurement_ms:
        scenarios = [with_overrides(sc, measurement_ms=args.measurement_ms) for sc in scenarios]
    try:
        lt.perf_analyzer_version(lt.find_perf_analyzer())
    except lt.PerfAnalyzerUnavailable as e:
        print(f"stylize loadtest: {e}", file=sys.stderr)
        return 3

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or lt.results_dir() / stamp
    argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "loadtest" else list(args.names)
    command = _command_line(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731

    server = None
    startup_s = None
    url = args.url
    admin_key = default_admin_key()
    http_url = args.http_url or f"{url.rsplit(':', 1)[0]}:8000"
    try:
        if args.serve:
            from stylize.server.errors import ServerError
            from stylize.server.launcher import start_local

            print(f"starting a local server on {args.model_repository} ...", flush=True)
            t0 = time.perf_counter()
            try:
                server = start_local(args.model_repository)
            except ServerError as e:
                print(f"stylize loadtest: the server did not start: {e}", file=sys.stderr)
                return 4
            startup_s = time.perf_counter() - t0
            url, http_url, admin_key = server.grpc_url, server.http_url, server.admin_key
            print(f"server ready at {url} after {startup_s:.1f} s", flush=True)
        try:
            result = lt.run(
                scenarios,
                url=url,
                out_dir=out,
                command=command,
                startup_s=startup_s,
                log=log,
                admin_key=admin_key,
                http_url=http_url,
            )
        except lt.ServerNotReady as e:
            print(f"stylize loadtest: {e}", file=sys.stderr)
            return 4
    finally:
        if server is not None:
            server.stop()

    report = lt.write_report(result, out)
    print(f"\nreport: {report}\nresults: {out / 'results.json'} (raw perf_analyzer CSV/logs in {out / 'raw'})")
    if args.report_dir:
        _publish(report, out, args.report_dir)

    status = 0
    for set_name in {sc.set for sc in scenarios}:
        s = sets[set_name]
        if s.capacity is None:
            continue
        import json

        try:
            doc = lt.capacity_document(result, s)
        except lt.CapacityError as e:
            print(f"capacity file not written: {e}", file=sys.stderr)
            status = status or 5
            continue
        path = args.capacity_out or lt.results_dir() / "capacity.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(doc, indent=2) + "\n"
        (out / "capacity.json").write_text(text)
        path.write_text(text)
        if args.report_dir:  # versioned next to the committed report (loadtest/results/ is not in git)
            (args.report_dir / "capacity.json").write_text(text)
        print(f"capacity input for the capacity plan (python -m stylize_k8s.plan): {path}")

    errors = result.errors
    if errors:
        print(f"\n{len(errors)} error(s):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return status
