"""A tritonserver killed with SIGKILL leaves its python stubs running (re-parented to init, holding their memory)
and its shared-memory regions in /dev/shm; the next start of a server on the same cache folder removes both."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from small_repository import small_repository

pytestmark = pytest.mark.triton


def _orphan_stubs(backends: Path) -> set[int]:
    from stylize.server.launcher import _proc_cmdline, _proc_ppid

    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and (cmd := _proc_cmdline(p.name)) and cmd[0].startswith(str(backends)) and _proc_ppid(p.name) == 1}


def _regions() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("triton_*_backend_shm_region_*")}


def test_the_next_start_removes_what_a_killed_server_left(model_repository, tmp_path):
    from stylize.server import launcher
    from stylize.server.launcher import start_local

    repo = small_repository(model_repository, tmp_path / "repo", ["animevideo_x2"])
    cache = tmp_path / "cache"  # this test's own backend folder: stubs of other servers are not in it
    backends = (cache / "backends").resolve()
    before = _regions()
    server = start_local(repo, cache_dir=cache)
    try:
        ours = _regions() - before
        assert ours, "the python stubs made no shared-memory region"
        os.kill(server.pid, signal.SIGKILL)  # tritonserver alone, no drain: what an OOM kill does
        deadline = time.monotonic() + 10
        while not _orphan_stubs(backends) and time.monotonic() < deadline:
            time.sleep(0.2)
        orphans = _orphan_stubs(backends)
        assert orphans, "no orphaned stub: the premise of this test (seen on 2.51) did not hold"
        assert ours & _regions(), "the killed server's regions are gone by themselves"
    except BaseException:
        server.stop()  # (stop() would also take the orphans down with the server's process group)
        raise
    # a leftover is old: regions younger than _SHM_MIN_AGE_S may belong to a server starting at that moment
    young = sorted(ours)[0]
    aged = time.time() - 2 * launcher._SHM_MIN_AGE_S
    for name in ours - {young}:
        os.utime(Path("/dev/shm") / name, (aged, aged))
    with start_local(repo, cache_dir=cache) as again:
        assert set(again.cleanup.killed_stubs) >= orphans
        assert not _orphan_stubs(backends)  # the new server's stubs have their parent
        assert not orphans & {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
        assert ours - {young} <= set(again.cleanup.removed_regions) and not (ours - {young}) & _regions()
        assert young in _regions()  # too young to be judged a leftover: left alone (removed at a later start)
    (Path("/dev/shm") / young).unlink(missing_ok=True)
