"""stylize serve: a real tritonserver on the model repository (the embedded one, or the NGC one on PATH)."""

from __future__ import annotations

import argparse

from stylize.server.launcher import add_serve_arguments, run_serve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start Triton Inference Server on the model repository")
    add_serve_arguments(p)
    p.set_defaults(func=run_serve)
