"""`stylize serve`'s supervisor: one tritonserver in the foreground, its errors echoed, a banner once ready, started again
when it dies by a signal (a kill -9, the OOM killer)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence, TextIO

from stylize.contract import access
from stylize.server.errors import PortInUseError, ServerError
from stylize.server.launcher import TritonServer
from stylize.server.settings import ServerSettings

# ---------------------------------------------------------------------------------------------------------------
# CLI glue
# ---------------------------------------------------------------------------------------------------------------


_WILDCARDS = ("0.0.0.0", "", "::", "[::]")


def banner(settings: ServerSettings, models: Sequence[str], *, pid: int | None, log_path: Path) -> str:
    """What `stylize serve` prints once ready: the addresses the endpoints are bound to (not where a local client
    would connect: a wildcard bind is said to be one), and how the admin APIs are guarded (never the key)."""
    s = settings
    host = s.address or "0.0.0.0"
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    loopback = host in ("127.0.0.1", "::1", "localhost")
    scope = "all interfaces" if host in _WILDCARDS else ("this machine only" if loopback else "this address only")
    key_from = (
        f"the key in {access.ADMIN_KEY_ENV}"
        if s.admin_key
        else f"a random key of this process (set {access.ADMIN_KEY_ENV} to choose one)"
    )
    heal = (
        "a model whose python stub dies is reloaded (off: --no-heal)"
        if s.heals
        else "off: a dead python stub stays dead"
    )
    return (
        f"tritonserver ready (pid {pid}, log {log_path})\n"
        f"  bound to {host} ({scope})\n"
        f"  gRPC     {shown}:{s.grpc_port}\n"
        f"  HTTP     http://{shown}:{s.http_port}\n"
        f"  metrics  http://{shown}:{s.metrics_port}/metrics\n"
        f"  admin    {', '.join(access.RESTRICTED_APIS)}: only with header {access.ADMIN_HEADER}, {key_from}\n"
        f"  healing  {heal}\n"
        f"  models   {', '.join(models) if models else '(none)'}"
    )


# `stylize serve` starts a tritonserver that died (a kill -9, the OOM killer) again, this many times in this window
MAX_RESTARTS = 3
RESTART_WINDOW_S = 600


def serve(
    settings: ServerSettings, *, block: bool = True, out: TextIO | None = None, echo_log: bool = True
) -> "int | TritonServer":
    """Start, wait until ready, print the endpoints and ready models; with ``block`` run until SIGINT/SIGTERM and
    drain gracefully, returning the exit code. Without ``block`` the running :class:`TritonServer` is returned."""
    out = out or sys.stdout
    server = TritonServer(settings, echo=sys.stderr if echo_log else None)
    try:
        server.start()
        server.wait_ready()
    except BaseException as e:
        server.stop()
        if not isinstance(e, ServerError):
            raise
        return _report_start_failure(e, echo_log)
    models = server.ready_models()
    print(banner(settings, models, pid=server.pid, log_path=server.log_path), file=out, flush=True)
    if not block:
        return server

    stop_requested = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    restarts: list[float] = []
    try:
        while not stop_requested.wait(0.5):
            if not server.is_running():
                code = server.stop()
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < RESTART_WINDOW_S]
                if len(restarts) >= MAX_RESTARTS:
                    print(
                        f"stylize serve: tritonserver exited unexpectedly with code {code}, the "
                        f"{len(restarts) + 1}th time in {RESTART_WINDOW_S // 60} minutes: giving up\n"
                        f"{server.log_tail()}",
                        file=sys.stderr,
                    )
                    return code or 1
                print(
                    f"stylize serve: tritonserver exited unexpectedly with code {code} (log {server.log_path}); "
                    f"restarting it on the same ports",
                    file=sys.stderr,
                    flush=True,
                )
                restarts.append(now)
                dead = server.stub_regions()
                server = TritonServer(settings, echo=sys.stderr if echo_log else None)
                server._dead_regions = dead
                try:
                    server.start()  # removes what the dead one left: its stubs and their shared memory
                    server.wait_ready()
                except ServerError as e:
                    server.stop()
                    return _report_start_failure(e, echo_log)
                print(
                    f"stylize serve: tritonserver restarted (pid {server.pid}); removed "
                    f"{len(server.cleanup.killed_stubs)} orphaned stub(s) and "
                    f"{len(server.cleanup.removed_regions)} shared-memory region(s) of the dead one",
                    file=out,
                    flush=True,
                )
        print(
            f"stylize serve: {signal.Signals(received[0]).name} received, draining in-flight requests "
            f"(up to {settings.exit_timeout} s)",
            file=out,
            flush=True,
        )
        code = server.stop()
        return 0 if code in (0, -signal.SIGTERM) else (code or 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


def _report_start_failure(error: ServerError, echo_log: bool) -> int:
    print(f"stylize serve: {error}", file=sys.stderr)
    if error.log_tail and not echo_log:
        print(error.log_tail, file=sys.stderr, end="")
    return 2 if isinstance(error, PortInUseError) else 1
