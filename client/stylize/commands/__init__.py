"""Subcommands of the `stylize` CLI: each module has register(subparsers) and sets args.func."""

import os

DEFAULT_URL = "localhost:8001"


def default_url() -> str:
    """gRPC endpoint of the server: --url, else STYLIZE_URL, else the local default."""
    return os.environ.get("STYLIZE_URL", DEFAULT_URL)
