"""`stylize health`: is the server live and ready, which version, which models; exit status 0 only when ready."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from stylize.commands._connection import add_connection_args, make_client


def run(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        h = client.health(timeout=args.timeout)
    if args.json:
        print(json.dumps(asdict(h) | {"ok": h.ok}, indent=2))
        return 0 if h.ok else 1
    if h.error:
        print(f"{h.url}: unreachable ({h.error})")
        return 1
    ready = sum(1 for s in h.models.values() if s == "READY")
    print(
        f"{h.url}: {'live' if h.live else 'not live'}, {'ready' if h.ready else 'NOT READY'}; "
        f"Triton {h.server_version}; {ready}/{len(h.models)} model versions ready ({h.seconds * 1000:.0f} ms)"
    )
    if args.verbose or not h.ready:
        for name, state in sorted(h.models.items()):
            if args.verbose or state != "READY":
                print(f"  {name}: {state}")
    return 0 if h.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "health", help="check that the server is live and ready", description=__doc__.splitlines()[0]
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true", help="list every model version and its state")
    add_connection_args(p, retries=False)
    p.set_defaults(func=run)
