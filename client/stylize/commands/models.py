"""`stylize models`: the models the server offers, with task, scale, versions and weights status."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from stylize.commands._connection import add_connection_args, make_client


def format_table(infos) -> str:
    rows = [("MODEL", "TASK", "SCALE", "VERSIONS", "WEIGHTS", "READY", "TITLE")]
    for m in infos:
        rows.append(
            (
                m.id,
                m.task,
                f"x{m.scale}",
                ",".join(map(str, m.versions)) or "-",
                # each served version's own label when the build recorded them, newest first: "3:real 2:untrained"
                " ".join(f"{v}:{s}" for v, s in m.served_weights.items()) or m.weights,
                "yes" if m.ready else "no",
                m.title,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def run(args: argparse.Namespace) -> int:
    from stylize.contract.errors import StylizeError

    with make_client(args) as client:
        try:
            infos = client.models()
        except StylizeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps([asdict(m) for m in infos], indent=2))
    elif not infos:
        print("no stylize models are loaded on this server", file=sys.stderr)
        return 1
    else:
        print(format_table(infos))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the server's models (task, scale, versions, weights)", description=__doc__.splitlines()[0]
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_args(p, retries=False)
    p.set_defaults(func=run)
