"""Where the SDK connects when it is not told: the gRPC endpoint and the admin key, from the environment."""

from __future__ import annotations

import os

DEFAULT_URL = "localhost:8001"


def default_url() -> str:
    """gRPC endpoint of the server: the caller's url (--url), else STYLIZE_URL, else the local default."""
    return os.environ.get("STYLIZE_URL", DEFAULT_URL)


def default_admin_key() -> str | None:
    """Key of the server's admin APIs (stylize.contract.access): STYLIZE_ADMIN_KEY, else None (the SDK then uses only
    the open APIs)."""
    from stylize.contract.access import ADMIN_KEY_ENV

    return os.environ.get(ADMIN_KEY_ENV) or None
