"""The web page's settings: one object, filled from flags and ``STYLIZE_WEB_*`` variables (Triton's address is the
project-wide ``STYLIZE_URL``, as for every client command)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from stylize.contract.access import ADMIN_KEY_ENV
from stylize.sdk.connection import default_admin_key, default_url
from stylize.server.settings import parse_size

ENV_PREFIX = "STYLIZE_WEB_"


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    host: str = "127.0.0.1"  # loopback by default: the page has no authentication
    port: int = 8080
    url: str = dataclasses.field(default_factory=default_url)  # Triton's gRPC endpoint
    concurrency: int = 2  # jobs talking to Triton at the same time (the others wait, queued)
    max_upload: int = 256 * 1024 * 1024  # bytes of one uploaded file
    max_jobs: int = 200  # jobs kept (queued, running and finished); the oldest finished go first
    result_ttl: float = 3600.0  # seconds a finished job and its result are kept
    result_bytes: int = 2 * 1024 * 1024 * 1024  # all kept results together (memory for photos, disk for clips)
    timeout: float = 600.0  # seconds of one request attempt to Triton (a large photo on a CPU is one request)
    work_dir: Path | None = None  # uploads and video results; default: a fresh private temporary folder
    # Triton's admin key (stylize.contract.access: STYLIZE_ADMIN_KEY, or the key of the server `--serve` started): the model
    # configs are an admin API, and the image steps' settings (tile plan, limits) are in them. Never shown.
    admin_key: str | None = dataclasses.field(default_factory=default_admin_key, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0..65535")
        if self.concurrency < 1 or self.max_jobs < 1:
            raise ValueError("concurrency and max_jobs must be >= 1")
        if self.max_upload < 1 or self.result_bytes < 1 or self.result_ttl <= 0 or self.timeout <= 0:
            raise ValueError("max_upload, result_bytes, result_ttl and timeout must be > 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "WebSettings":
        """Defaults, then ``STYLIZE_WEB_*`` (and ``STYLIZE_URL``, ``STYLIZE_ADMIN_KEY``), then ``overrides`` (None
        values ignored)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (suffix, parse) in _ENV_FIELDS.items():
            raw = environ.get(ENV_PREFIX + suffix)
            if raw:
                try:
                    values[name] = parse(raw)
                except ValueError as e:
                    raise ValueError(f"{ENV_PREFIX}{suffix}={raw!r}: {e}") from None
        if environ.get("STYLIZE_URL"):
            values["url"] = environ["STYLIZE_URL"]
        if environ.get(ADMIN_KEY_ENV):
            values["admin_key"] = environ[ADMIN_KEY_ENV]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_ENV_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("HOST", str),
    "port": ("PORT", int),
    "concurrency": ("CONCURRENCY", int),
    "max_upload": ("MAX_UPLOAD", parse_size),
    "max_jobs": ("MAX_JOBS", int),
    "result_ttl": ("RESULT_TTL", float),
    "result_bytes": ("RESULT_BYTES", parse_size),
    "timeout": ("TIMEOUT", float),
    "work_dir": ("WORK_DIR", Path),
}
