"""`stylize web`: a page to stylize and upscale photos and clips in a browser, served beside Triton.

Upload, real progress, before/after, download on http://127.0.0.1:8080/, a client of Triton at --url. With --serve
it starts tritonserver on the model repository too (what `make run` does), with the response cache on, and Ctrl-C
stops both. The page and its HTTP API: docs/web.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    from stylize.sdk.connection import DEFAULT_URL
    from stylize.server.settings import parse_size

    p = subparsers.add_parser(
        "web", help="serve the web page (upload, progress, before/after, download)", description=__doc__.splitlines()[0]
    )
    p.add_argument("--host", default=None, help="bind address (env STYLIZE_WEB_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (env STYLIZE_WEB_PORT, default 8080)")
    p.add_argument(
        "--url",
        default=None,
        help=f"Triton's gRPC endpoint host:port (env STYLIZE_URL, default {DEFAULT_URL}; ignored with --serve)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs sent to Triton at the same time (env STYLIZE_WEB_CONCURRENCY, default 2)",
    )
    p.add_argument(
        "--max-upload",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="largest file accepted, e.g. 256M (env STYLIZE_WEB_MAX_UPLOAD, default 256M)",
    )
    p.add_argument(
        "--result-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long results are kept (env STYLIZE_WEB_RESULT_TTL, default 3600)",
    )
    p.add_argument(
        "--result-bytes",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="all kept results together, e.g. 2G (env STYLIZE_WEB_RESULT_BYTES, default 2G)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="deadline of one request to Triton (env STYLIZE_WEB_TIMEOUT, default 600)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="folder for uploads and video results (env STYLIZE_WEB_WORK_DIR; default a fresh private "
        "temporary folder, deleted at exit)",
    )
    g = p.add_argument_group("serve Triton too")
    g.add_argument("--serve", action="store_true", help="start tritonserver on the model repository first")
    g.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help="with --serve (env STYLIZE_MODEL_REPOSITORY, default ./model_repository)",
    )
    g.add_argument(
        "--cache-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="with --serve: Triton's response cache (env STYLIZE_CACHE_SIZE, default 256M here)",
    )
    g.add_argument("--grpc-port", type=int, default=None, help="with --serve (env STYLIZE_GRPC_PORT, default 8001)")
    g.add_argument("--http-port", type=int, default=None, help="with --serve (env STYLIZE_HTTP_PORT, default 8000)")
    g.add_argument(
        "--metrics-port", type=int, default=None, help="with --serve (env STYLIZE_METRICS_PORT, default 8002)"
    )
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace, url: str | None, admin_key: str | None = None):
    from stylize.web.settings import WebSettings

    return WebSettings.from_env(
        host=args.host,
        port=args.port,
        url=url,
        concurrency=args.concurrency,
        max_upload=args.max_upload,
        result_ttl=args.result_ttl,
        result_bytes=args.result_bytes,
        timeout=args.timeout,
        work_dir=args.work_dir,
        admin_key=admin_key,
    )


def _start_triton(args: argparse.Namespace):
    from stylize.commands.serve import serve_cache_size
    from stylize.server.errors import ServerError
    from stylize.server.launcher import TritonServer
    from stylize.server.settings import ServerSettings

    cache = serve_cache_size(args.cache_size)
    # loopback unless STYLIZE_ADDRESS says otherwise: people use the page, and only it needs to reach Triton
    address = None if os.environ.get("STYLIZE_ADDRESS") else "127.0.0.1"
    settings = ServerSettings.from_env(
        model_repository=args.model_repository,
        cache_size=cache,
        address=address,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
    )
    server = TritonServer(settings)
    print(
        f"stylize web: starting tritonserver on {settings.model_repository} (response cache "
        f"{settings.cache_size // (1024 * 1024)} MiB; log {server.log_path}) ...",
        flush=True,
    )
    try:
        server.start()
        server.wait_ready()
    except ServerError as e:
        server.stop()
        print(f"stylize web: tritonserver did not start: {e}", file=sys.stderr)
        if e.log_tail:
            print(e.log_tail, file=sys.stderr, end="")
        return None
    except BaseException:
        server.stop()
        raise
    print(
        f"stylize web: Triton ready: gRPC {server.grpc_url}, HTTP {server.http_url}, metrics {server.metrics_url}",
        flush=True,
    )
    return server


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from stylize.web.app import create_app
    except ImportError as e:
        print(f"stylize web needs the web extra: pip install 'stylize[web]' ({e})", file=sys.stderr)
        return 2
    try:
        settings = _settings(args, args.url)
    except (TypeError, ValueError) as e:
        print(f"stylize web: {e}", file=sys.stderr)
        return 2
    server = None
    try:
        if args.serve:
            server = _start_triton(args)
            if server is None:
                return 1
            settings = _settings(args, server.grpc_url, server.admin_key)  # the key of the server we started
        shown = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
        print(
            f"stylize web: http://{shown}:{settings.port}/ (Triton at {settings.url}); Ctrl-C stops"
            + (" both" if server else ""),
            flush=True,
        )
        web = uvicorn.Server(
            uvicorn.Config(
                create_app(settings),
                host=settings.host,
                port=settings.port,
                log_level="info",
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        try:
            web.run()  # until SIGINT / SIGTERM: then drains, runs the app's shutdown (cancels jobs, deletes files)
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, once it has shut down
            pass
        return 0 if web.started else 1
    finally:
        if server is not None:
            print("stylize web: stopping tritonserver (draining in-flight requests) ...", flush=True)
            server.stop()
