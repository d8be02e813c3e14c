"""How a tritonserver is started: ServerSettings (fields, STYLIZE_* environment, defaults), sizes and booleans as users write
them, the cache folder, free ports."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from stylize.contract import access

ENV_PREFIX = "STYLIZE_"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../stylize


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: str | int) -> int:
    """Bytes from ``1048576``, ``256M``, ``256MiB``, ``1g`` (binary units)."""
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", str(value), re.IGNORECASE)
        if not m:
            raise ValueError(f"not a size: {value!r} (examples: 1048576, 256M, 1G)")
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if size < 0:
        raise ValueError(f"size must not be negative: {value!r}")
    return size


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    raw = str(value).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _source_checkout_root() -> Path | None:
    """The project root when stylize runs from its source tree (client/stylize), else None."""
    root = PACKAGE_DIR.parent.parent
    return root if (root / "pyproject.toml").is_file() and PACKAGE_DIR.parent.name == "client" else None


def default_cache_dir() -> Path:
    """``$STYLIZE_CACHE``, else ``.cache/stylize`` in a source checkout, else ``~/.cache/stylize``."""
    if os.environ.get(f"{ENV_PREFIX}CACHE"):
        return Path(os.environ[f"{ENV_PREFIX}CACHE"])
    root = _source_checkout_root()
    return root / ".cache" / "stylize" if root else Path.home() / ".cache" / "stylize"


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None


def _optional_int(value: str) -> int | None:
    return int(value) if value.strip() else None


# field name -> (environment variable, parser of its text)
_ENV_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "model_repository": ("MODEL_REPOSITORY", Path),
    "address": ("ADDRESS", str),
    "grpc_port": ("GRPC_PORT", int),
    "http_port": ("HTTP_PORT", int),
    "metrics_port": ("METRICS_PORT", int),
    "cache_size": ("CACHE_SIZE", parse_size),
    "log_verbose": ("LOG_VERBOSE", int),
    "ort_threads": ("ORT_THREADS", _optional_int),
    "strict_readiness": ("STRICT_READINESS", parse_bool),
    "exit_timeout": ("EXIT_TIMEOUT", int),
    "startup_timeout": ("STARTUP_TIMEOUT", float),
    "tritonserver": ("TRITONSERVER", _optional_path),
    "backend_directory": ("BACKEND_DIRECTORY", _optional_path),
    "cache_dir": ("CACHE", Path),
    "log_file": ("LOG_FILE", _optional_path),
    "extra_args": ("TRITON_ARGS", lambda s: tuple(shlex.split(s))),
    "admin_key": ("ADMIN_KEY", str),
    "heal": ("HEAL", parse_bool),
    "models": ("MODELS", lambda v: tuple(m.strip() for m in v.split(",") if m.strip())),
}


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything `stylize serve` and the tests configure; every field maps onto ``STYLIZE_<NAME>`` (see
    :meth:`from_env`; ``cache_dir`` is ``STYLIZE_CACHE``, ``extra_args`` is ``STYLIZE_TRITON_ARGS``)."""

    model_repository: Path = Path("model_repository")
    address: str = "127.0.0.1"  # bind address of all three endpoints: loopback unless asked (--host 0.0.0.0)
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    cache_size: int = 0  # bytes of Triton's local response cache; 0 disables it
    log_verbose: int = 0
    ort_threads: int | None = None  # server-wide intra-op threads per ORT session; None keeps the model config's
    strict_readiness: bool = True
    exit_timeout: int = 30  # seconds Triton waits for in-flight requests after SIGTERM
    startup_timeout: float = 180.0
    tritonserver: Path | None = None  # explicit binary; default: PATH, then the nvidia-pytriton wheel
    backend_directory: Path | None = None  # explicit --backend-directory; default: assembled for the wheel
    cache_dir: Path = field(default_factory=default_cache_dir)
    log_file: Path | None = None  # default: <cache_dir>/logs/tritonserver-<http_port>.log
    extra_args: tuple[str, ...] = ()
    # Key of the restricted admin APIs (stylize.contract.access); None: a random one per server, never printed
    admin_key: str | None = field(default=None, repr=False)
    # Reload a model whose python stub died (stylize.server.healing): explicit model-control mode, every model
    # loaded at start. Off, or when extra_args choose a model-control mode, a dead stub stays dead.
    heal: bool = True
    # Triton models to load (client-facing ids: Triton loads what an ensemble is made of); empty: the whole repository
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.admin_key is not None:
            access.check_key(self.admin_key)
        ports = (self.grpc_port, self.http_port, self.metrics_port)
        for p in ports:
            if not 1 <= p <= 65535:
                raise ValueError(f"port {p} is outside 1..65535")
        if len(set(ports)) != 3:
            raise ValueError(f"gRPC, HTTP and metrics ports must differ, got {ports}")
        if self.cache_size < 0 or self.exit_timeout < 0 or self.startup_timeout <= 0:
            raise ValueError("cache_size and exit_timeout must be >= 0, startup_timeout > 0")
        object.__setattr__(self, "model_repository", Path(self.model_repository))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        object.__setattr__(self, "models", tuple(self.models))
        if self.models and any(a.startswith("--model-control-mode") for a in self.extra_args):
            raise ValueError("models= chooses explicit model control: do not pass --model-control-mode as well")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "ServerSettings":
        """Defaults, then ``STYLIZE_*`` variables, then ``overrides`` (None values are ignored, so parsed
        argparse namespaces can be passed as they are)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (suffix, parse) in _ENV_FIELDS.items():
            raw = environ.get(ENV_PREFIX + suffix)
            if raw is None or raw == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as e:
                raise ValueError(f"{ENV_PREFIX}{suffix}={raw!r}: {e}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown server setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("cache_size"), str):
            values["cache_size"] = parse_size(values["cache_size"])
        return cls(**values)

    @classmethod
    def local(cls, model_repository: Path | str, **overrides: Any) -> "ServerSettings":
        """Loopback-only settings on three free ports (tests, demos); ``overrides`` as for the constructor."""
        grpc_port, http_port, metrics_port = find_free_ports(3)
        values: dict[str, Any] = {
            "address": "127.0.0.1",
            "grpc_port": grpc_port,
            "http_port": http_port,
            "metrics_port": metrics_port,
        }
        values.update(overrides)
        return cls(model_repository=Path(model_repository), **values)

    @property
    def heals(self) -> bool:
        """Whether the server reloads a model whose stub died: ``heal`` on and no model-control mode of the user's."""
        return self.heal and not any(a.startswith("--model-control-mode") for a in self.extra_args)

    @property
    def client_host(self) -> str:
        """Where a client on this machine reaches the server (wildcard binds are reached over loopback)."""
        return "127.0.0.1" if self.address in ("0.0.0.0", "", "::", "[::]") else self.address


# ---------------------------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when nothing listens on ``host:port``. SO_REUSEADDR so a port left in TIME_WAIT by a server that just
    stopped still counts as free (Triton can bind it too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_free_ports(count: int = 3, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (held together while choosing, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
