"""stylize serve: a real tritonserver on the model repository (the embedded one, or the NGC one on PATH)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stylize.server.settings import ENV_PREFIX, ServerSettings, parse_size
from stylize.server.supervisor import serve


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `stylize serve` flags; each defaults to its STYLIZE_* variable, then to ServerSettings' default."""
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help="Triton model repository (env STYLIZE_MODEL_REPOSITORY, default ./model_repository)",
    )
    parser.add_argument(
        "--host",
        "--address",
        dest="address",
        default=None,
        metavar="ADDRESS",
        help="bind address of all endpoints (env STYLIZE_ADDRESS); default 127.0.0.1, this machine "
        "only: --host 0.0.0.0 serves other machines too",
    )
    parser.add_argument("--grpc-port", type=int, default=None, help="gRPC port (env STYLIZE_GRPC_PORT, default 8001)")
    parser.add_argument("--http-port", type=int, default=None, help="HTTP port (env STYLIZE_HTTP_PORT, default 8000)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus metrics port (env STYLIZE_METRICS_PORT, default 8002)",
    )
    parser.add_argument(
        "--cache-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="local response cache size, e.g. 1G; 0 disables (env STYLIZE_CACHE_SIZE; default 256M)",
    )
    parser.add_argument(
        "--ort-threads",
        type=int,
        default=None,
        help="intra-op threads per ONNX Runtime session, overriding the model configs (env STYLIZE_ORT_THREADS)",
    )
    parser.add_argument(
        "--log-verbose", type=int, default=None, help="Triton verbose log level (env STYLIZE_LOG_VERBOSE)"
    )
    parser.add_argument(
        "--exit-timeout",
        type=int,
        default=None,
        help="seconds to drain in-flight requests on shutdown (env STYLIZE_EXIT_TIMEOUT, default 30)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=None,
        help="seconds to wait for readiness (env STYLIZE_STARTUP_TIMEOUT, default 180)",
    )
    parser.add_argument(
        "--tritonserver",
        type=Path,
        default=None,
        help="tritonserver binary (env STYLIZE_TRITONSERVER; default: PATH, then nvidia-pytriton)",
    )
    parser.add_argument(
        "--models",
        type=lambda v: tuple(m.strip() for m in v.split(",") if m.strip()),
        default=None,
        metavar="ID,ID",
        help="load only these models, e.g. animeganv2,esrgan_x4 (env STYLIZE_MODELS); default: all",
    )
    parser.add_argument(
        "--no-heal",
        dest="heal",
        action="store_const",
        const=False,
        default=None,
        help="do not reload a model whose python stub died (env STYLIZE_HEAL=0); by default the "
        "server runs in explicit model-control mode so that it can (stylize.server.healing)",
    )
    parser.add_argument(
        "--triton-arg",
        dest="extra_args",
        action="append",
        default=None,
        metavar="ARG",
        help="extra tritonserver argument, repeatable; write it as --triton-arg=--flag=value "
        "(env STYLIZE_TRITON_ARGS, shell-quoted)",
    )
    return parser


_SERVE_ARGS = (
    "model_repository",
    "address",
    "grpc_port",
    "http_port",
    "metrics_port",
    "cache_size",
    "ort_threads",
    "log_verbose",
    "exit_timeout",
    "startup_timeout",
    "tritonserver",
    "extra_args",
    "heal",
    "models",
)


# What `stylize serve` and `stylize web --serve` give Triton's response cache when neither --cache-size nor
# STYLIZE_CACHE_SIZE says: bounded, and on, so that an identical request is answered from it (the tests' and the
# bench's servers keep ServerSettings' 0: a measurement must not be a cache hit)
DEFAULT_SERVE_CACHE = 256 * 1024 * 1024


def serve_cache_size(flag: int | None) -> int | None:
    """The cache size to pass to :meth:`ServerSettings.from_env`: the flag, else the env's (None), else the default."""
    if flag is not None or os.environ.get(ENV_PREFIX + "CACHE_SIZE"):
        return flag
    return DEFAULT_SERVE_CACHE


def run_serve(args: argparse.Namespace) -> int:
    """Entry point for `stylize serve` (blocks until stopped)."""
    try:
        values = {k: getattr(args, k, None) for k in _SERVE_ARGS}
        values["cache_size"] = serve_cache_size(values["cache_size"])
        settings = ServerSettings.from_env(**values)
    except (TypeError, ValueError) as e:
        print(f"stylize serve: {e}", file=sys.stderr)
        return 2
    result = serve(settings, block=True)
    return result if isinstance(result, int) else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start Triton Inference Server on the model repository")
    add_serve_arguments(p)
    p.set_defaults(func=run_serve)
