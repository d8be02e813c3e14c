"""Subcommands of the `stylize` CLI: each module has register(subparsers) and sets args.func."""

import os

DEFAULT_URL = "localhost:8001"


def default_url() -> str:
    """gRPC endpoint of the server: --url, else STYLIZE_URL, else the local default."""
    return os.environ.get("STYLIZE_URL", DEFAULT_URL)


def default_admin_key() -> str | None:
    """Key of the server's admin APIs (stylize.access): STYLIZE_ADMIN_KEY, else None (the SDK then uses only the
    open APIs)."""
    from stylize.access import ADMIN_KEY_ENV

    return os.environ.get(ADMIN_KEY_ENV) or None
