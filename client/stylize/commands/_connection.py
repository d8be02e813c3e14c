"""Flags every client subcommand shares (--url, --timeout, ...) and the client they build."""

from __future__ import annotations

import argparse

from stylize.sdk.connection import default_url


def add_connection_args(parser: argparse.ArgumentParser, *, retries: bool = True) -> None:
    g = parser.add_argument_group("server")
    g.add_argument(
        "--url", default=default_url(), help="gRPC endpoint host:port (default: $STYLIZE_URL, else %(default)s)"
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="deadline of each request attempt (default: %(default)s)",
    )
    if retries:
        g.add_argument(
            "--retry-for",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="keep retrying while the server is unavailable for up to this long (default: %(default)s)",
        )
        g.add_argument(
            "--compression",
            choices=("gzip", "deflate"),
            default=None,
            help="gRPC message compression (helps raw frames on slow links; PNG does not compress)",
        )
        g.add_argument(
            "--model-version",
            default=None,
            metavar="N",
            help="run this version of the model's network (`stylize models` lists the served ones; "
            "default: the newest)",
        )


def make_client(args: argparse.Namespace, *, model: str | None = None):
    from stylize.sdk.client import DEFAULT_MODEL, StylizeClient
    from stylize.sdk.transport import RetryPolicy

    return StylizeClient(
        url=args.url,
        model=model or getattr(args, "model", None) or DEFAULT_MODEL,
        version=getattr(args, "model_version", None),
        timeout=args.timeout,
        retry=RetryPolicy(deadline=getattr(args, "retry_for", 60.0)),
        compression=getattr(args, "compression", None),
    )
