"""What a tritonserver killed by a signal leaves behind (python stubs re-parented to init, shared-memory regions), found
and removed before the next start."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# the python backend's regions, and those of Python-based backends (ours: triton_openvino_backend_shm_region_...)
_SHM_REGION = re.compile(r"^triton_\w+?_backend_shm_region_")
_SHM_MIN_AGE_S = 120.0  # a leftover is older than this; a region of a server being started or growing is not
_STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class Cleanup:
    killed_stubs: tuple[int, ...]
    removed_regions: tuple[str, ...]


def _proc_cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _proc_ppid(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[1])  # the name may hold spaces: fields follow its ")"
    except (OSError, ValueError, IndexError):
        return None


def clean_up_after_crashes(
    cache_dir: Path,
    *,
    shm_dir: Path = Path("/dev/shm"),
    min_age_s: float = _SHM_MIN_AGE_S,
    dead_regions: Iterable[str] = (),
) -> Cleanup:
    """What a server killed with SIGKILL leaves behind, removed before the next start: python-backend stubs of our
    backend directory whose tritonserver is gone (re-parented to init, with the processes they started; they held
    their memory for good), and shared-memory regions of the python backend that no living process maps or names (a
    memory-backed /dev/shm counts against the machine's, or the pod's, memory). Stubs of a live server keep their
    parent and their regions are mapped: both are left alone.

    ``min_age_s``: regions younger than this are never removed (another server on the machine may have just made
    one); 0 only where no other server can use ``shm_dir``, as the pod's entrypoint does on its own emptyDir before
    tritonserver starts (stylize.server.entrypoint)."""
    backends = str(Path(cache_dir).resolve() / "backends")
    proc = Path("/proc")
    cmds = {int(p.name): _proc_cmdline(p.name) for p in proc.iterdir() if p.name.isdigit()} if proc.is_dir() else {}
    parents = {pid: _proc_ppid(str(pid)) for pid in cmds}

    def ours(pid: int) -> bool:
        cmd = cmds.get(pid) or [""]
        return cmd[0].endswith(_STUB_NAME) and cmd[0].startswith(backends)

    def orphaned(pid: int) -> bool:  # a stub of ours whose chain of stub parents ends at init
        seen = set()
        while ours(pid) and pid not in seen:
            seen.add(pid)
            pid = parents.get(pid) or 0
        return pid == 1

    killed = [pid for pid in cmds if ours(pid) and orphaned(pid)]
    # each stub names its region on its command line: those of the orphans belong to their dead server, whatever
    # their age (what lets a restart right after a crash start clean)
    theirs = {a for pid in killed for a in cmds[pid] if _SHM_REGION.match(a)}
    theirs.update(dead_regions)  # a restart knows the regions of the server that died (its stubs may be gone)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while (
        killed
        and time.monotonic() < deadline
        and any(Path(f"/proc/{pid}/maps").exists() and _proc_ppid(str(pid)) is not None for pid in killed)
    ):
        time.sleep(0.05)  # their mappings go when they are gone
    in_use: set[str] = set()
    for pid in [p.name for p in proc.iterdir() if p.name.isdigit()] if proc.is_dir() else []:
        in_use.update(a for a in _proc_cmdline(pid) if _SHM_REGION.match(a))
        try:
            maps = Path(f"/proc/{pid}/maps").read_text(errors="replace")
        except OSError:
            continue
        in_use.update(
            name
            for line in maps.splitlines()
            if "_backend_shm_region_" in line and _SHM_REGION.match(name := line.rsplit("/", 1)[-1].split()[0])
        )
    removed: list[str] = []
    now = time.time()
    for region in shm_dir.glob("triton_*_backend_shm_region_*") if shm_dir.is_dir() else ():
        try:
            st = region.stat()
            # young regions are never touched: another live server may have just made one (at a stub's start, or
            # when its shared memory grows) and not mapped it yet when /proc was read above
            old = min_age_s <= 0 or now - st.st_mtime > min_age_s or region.name in theirs
            if region.name not in in_use and st.st_uid == os.geteuid() and old:
                region.unlink()
                removed.append(region.name)
        except OSError:
            pass
    return Cleanup(tuple(killed), tuple(removed))
