"""A python stub that dies (kill -9, the kernel's OOM killer, a segfault in a native library) must not leave its model
broken for good. Standard library only: the pod's probes run this module every few seconds.

What Triton 2.51 does by itself: nothing. The python backend forks one stub process per model instance (our python
steps, and the Python-based ``onnxruntime`` / ``openvino`` backends of the embedded server). When a stub dies, the
model and the server stay READY; every request routed to that instance fails with INTERNAL "Stub process
'<instance>' is not healthy" after a one-second health-check timeout, for as long as the server runs. The dead stub
stays a zombie child of tritonserver (state Z: the backend never waits for it until the instance is destroyed), and
that is the signal this module reads: a zombie child of tritonserver whose name is the stub's.

Two ways to heal, one per place the server runs:

- ``stylize serve`` and every server the launcher starts (tests included) run a :class:`StubWatchdog` thread. The
  launcher starts tritonserver in explicit model-control mode with every model loaded (``--load-model=*``), so the
  watchdog can reload the model whose stub died (the load API, with the admin key: stylize.contract.access). Triton replaces
  all instances of the model; requests that met the dead instance fail once (the SDK retries them: stylize.contract.errors
  maps "Stub process ... is not healthy" to ServerUnavailable). Measured on 2.51: the replaced model is never
  released (its destruction stalls on the dead instance: no "successfully unloaded" in the log, the zombie is never
  reaped), so its surviving stubs would hold their memory for good. The watchdog stops each of them once it is idle
  (no CPU time used for ``idle_s``), which returns that memory; what stays per repair is the zombie (no memory) and
  the old instances' shared-memory regions, which tritonserver keeps mapped.
- The Kubernetes pod runs tritonserver directly. Its readiness and liveness probes run ``python -m
  stylize.server.healing --check``: a dead stub fails readiness (the pod leaves the Service endpoints at once) and,
  after the liveness threshold, liveness (the kubelet restarts the container: a fresh server). With ``--ready-url``
  the same probe also asks tritonserver's strict readiness, so one probe covers both.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

STUB_COMM = "triton_python_b"  # /proc/<pid>/comm of triton_python_backend_stub (the kernel keeps 15 characters)
SERVER_COMM = "tritonserver"


@dataclass(frozen=True)
class Stub:
    """One python stub process: the model instance it serves (from its command line, readable while it lives)."""

    pid: int
    model: str
    version: str
    instance: str
    region: str = ""  # its shared-memory region in /dev/shm


@dataclass(frozen=True)
class ProcState:
    pid: int
    ppid: int
    state: str  # R, S, D, Z, ...
    comm: str


def _stat(pid: int, proc: Path) -> ProcState | None:
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    try:  # "pid (comm) state ppid ...": comm may hold spaces and parentheses, it ends at the last ")"
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        return ProcState(pid, int(rest[1]), rest[0], comm)
    except (ValueError, IndexError):
        return None


def _cpu_ticks(pid: int, proc: Path) -> int | None:
    """utime + stime of a process (clock ticks), None when it is gone."""
    try:
        raw = (proc / str(pid) / "stat").read_text()
        rest = raw[raw.rindex(")") + 2 :].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, ValueError, IndexError):
        return None


def _children(server_pid: int, proc: Path) -> list[ProcState]:
    out = []
    for p in proc.iterdir() if proc.is_dir() else ():
        if p.name.isdigit() and (st := _stat(int(p.name), proc)) is not None and st.ppid == server_pid:
            out.append(st)
    return out


def _stub_from_cmdline(pid: int, proc: Path) -> Stub | None:
    """argv of a 2.51 stub: binary, <repo>/<model>/<version>/<file>, shm region, sizes, parent pid, backend dir,
    ipc handle, instance name, ..."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if len(argv) < 9 or not argv[0].endswith("_stub"):
        return None
    model_file = Path(argv[1])
    return Stub(pid, model_file.parent.parent.name, model_file.parent.name, argv[8], argv[2])


def live_stubs(server_pid: int, *, proc: Path = Path("/proc")) -> dict[int, Stub]:
    """The stubs of ``server_pid`` that are alive now, by pid."""
    out = {}
    for st in _children(server_pid, proc):
        if st.comm == STUB_COMM and st.state != "Z" and (stub := _stub_from_cmdline(st.pid, proc)) is not None:
            out[st.pid] = stub
    return out


def dead_stubs(server_pid: int, *, proc: Path = Path("/proc")) -> list[int]:
    """Pids of stubs of ``server_pid`` that died and were not reaped (zombies: their instance is broken)."""
    return sorted(st.pid for st in _children(server_pid, proc) if st.comm == STUB_COMM and st.state == "Z")


def tritonservers(*, proc: Path = Path("/proc")) -> list[int]:
    return sorted(
        int(p.name)
        for p in proc.iterdir()
        if p.name.isdigit() and (st := _stat(int(p.name), proc)) is not None and st.comm == SERVER_COMM
    )


@dataclass(frozen=True)
class Heal:
    """One repair: the stub that died and the reload that replaced its model's instances."""

    model: str
    instance: str
    pid: int
    seconds: float  # from detection to the end of the reload
    ok: bool
    error: str = ""


@dataclass
class StubWatchdog:
    """Watch one tritonserver's stubs; reload the model whose stub died (``reload(model)`` raises on failure).

    The census runs every ``interval`` s: it learns every live stub's model from its command line (a zombie has
    none left) and treats each new zombie as a broken instance. One reload answers every dead stub of the model it
    found; the stubs the reload replaces are retired, so their own exit is not taken for another death. A failed
    reload is tried again after ``retry_s``; the model stays in :attr:`broken` until a reload succeeds.
    """

    server_pid: int
    reload: Callable[[str], None]
    interval: float = 0.5
    retry_s: float = 5.0
    idle_s: float = 2.0  # a replaced stub that used no CPU for this long holds no request: it is stopped
    log: Callable[[str], None] = lambda message: None
    proc: Path = Path("/proc")
    heals: list[Heal] = field(default_factory=list)
    broken: dict[str, float] = field(default_factory=dict)  # model -> when its reload may be tried again
    _known: dict[int, Stub] = field(default_factory=dict)
    _handled: set[int] = field(default_factory=set)
    _retired: dict[int, tuple[int, float]] = field(default_factory=dict)  # pid -> (cpu ticks, since when unchanged)
    stopped: list[int] = field(default_factory=list)  # replaced stubs this watchdog stopped
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "StubWatchdog":
        self.census()  # the stubs of the ready server, before anything can die unseen
        self._thread = threading.Thread(target=self._run, name="stylize-stub-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as e:  # the watchdog must outlive anything one census meets
                self.log(f"stylize: stub watchdog: {type(e).__name__}: {e}")

    def regions(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted({s.region for s in self._known.values() if s.region}))

    def census(self) -> dict[int, Stub]:
        live = live_stubs(self.server_pid, proc=self.proc)
        with self._lock:
            self._known.update(live)
        return live

    def check(self) -> list[Heal]:
        """One round: learn new stubs, reload the models of new dead ones (and retry failed reloads)."""
        self.census()
        now = time.monotonic()
        todo: dict[str, Stub] = {}
        for pid in dead_stubs(self.server_pid, proc=self.proc):
            if pid in self._handled:
                continue
            self._handled.add(pid)
            stub = self._known.get(pid)
            if stub is None:  # died before any census saw it alive: which model it served is unknown
                self.log(f"stylize: a python stub (pid {pid}) of tritonserver died before it was seen alive")
                continue
            self.log(f"stylize: the python stub of {stub.model} (instance {stub.instance}, pid {pid}) died")
            todo.setdefault(stub.model, stub)
        for model, retry_at in list(self.broken.items()):
            if model not in todo and now >= retry_at:
                todo[model] = Stub(-1, model, "", "(retry)")
        done = []
        for model, stub in todo.items():
            done.append(self._heal(model, stub))
        self._stop_idle_retired()
        return done

    def _stop_idle_retired(self) -> None:
        now = time.monotonic()
        for pid, (ticks, since) in list(self._retired.items()):
            st = _stat(pid, self.proc)
            cpu = _cpu_ticks(pid, self.proc)
            if st is None or st.state == "Z" or cpu is None or st.ppid != self.server_pid:
                self._retired.pop(pid)  # gone by itself
            elif cpu != ticks:
                self._retired[pid] = (cpu, now)  # still working on a request it held
            elif now - since >= self.idle_s:
                self._retired.pop(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    continue
                self.stopped.append(pid)
                self.log(f"stylize: stopped the idle stub {pid} of a replaced instance (Triton keeps it otherwise)")

    def _heal(self, model: str, stub: Stub) -> Heal:
        t0 = time.monotonic()
        with self._lock:
            replaced = {pid for pid, s in self._known.items() if s.model == model}
        try:
            self.reload(model)
        except Exception as e:
            self.broken[model] = time.monotonic() + self.retry_s
            heal = Heal(model, stub.instance, stub.pid, time.monotonic() - t0, False, f"{type(e).__name__}: {e}")
            self.log(f"stylize: reloading {model} failed ({heal.error}); trying again in {self.retry_s:.0f} s")
        else:
            self.broken.pop(model, None)
            self._handled.update(replaced)  # the old instances' stubs: their end is not a death to repair
            now = time.monotonic()
            for pid in replaced:
                if (cpu := _cpu_ticks(pid, self.proc)) is not None:
                    self._retired[pid] = (cpu, now)
            heal = Heal(model, stub.instance, stub.pid, time.monotonic() - t0, True)
            self.log(f"stylize: reloaded {model} in {heal.seconds:.1f} s: its instances are new")
        self.heals.append(heal)
        return heal


def check(
    server_pids: Iterable[int], *, ready_url: str | None = None, timeout: float = 2.0, proc: Path = Path("/proc")
) -> list[str]:
    """Problems that make the server unfit to serve (empty: healthy): dead stubs, no tritonserver, not ready."""
    problems = []
    pids = list(server_pids)
    if not pids:
        problems.append("no tritonserver process")
    for pid in pids:
        dead = dead_stubs(pid, proc=proc)
        if dead:
            problems.append(
                f"tritonserver (pid {pid}) has {len(dead)} dead python stub(s) (pid {', '.join(map(str, dead))}):"
                " requests to their model instances fail until the server is restarted"
            )
    if ready_url:
        try:
            with urllib.request.urlopen(ready_url, timeout=timeout) as r:
                if r.status != 200:
                    problems.append(f"{ready_url} answered HTTP {r.status}")
        except urllib.error.HTTPError as e:
            problems.append(f"{ready_url} answered HTTP {e.code} (a model is not ready)")
        except (urllib.error.URLError, OSError) as e:
            problems.append(f"{ready_url} did not answer: {e}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stylize.server.healing",
        description="Probe: exit 1 if a python stub of tritonserver died (its model "
        "instance is broken) or, with --ready-url, if the server is not ready.",
    )
    p.add_argument("--check", action="store_true", help="check and exit (the only mode)")
    p.add_argument("--pid", type=int, action="append", help="tritonserver pid (default: every tritonserver)")
    p.add_argument("--ready-url", help="also require HTTP 200 here, e.g. http://127.0.0.1:8000/v2/health/ready")
    p.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    problems = check(args.pid or tritonservers(), ready_url=args.ready_url, timeout=args.timeout)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


__all__ = ["Stub", "Heal", "StubWatchdog", "live_stubs", "dead_stubs", "tritonservers", "check", "main"]

if __name__ == "__main__":
    sys.exit(main())
