"""A tritonserver killed with SIGKILL leaves its python stubs running (re-parented to init, holding their memory)
and its shared-memory regions in /dev/shm; the next start of a server on the same cache folder removes both."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from small_repository import small_repository

pytestmark = pytest.mark.triton


def _orphan_stubs(backends: Path) -> set[int]:
    from stylize.server.cleanup import _proc_cmdline, _proc_ppid

    return {
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and (cmd := _proc_cmdline(p.name))
        and cmd[0].startswith(str(backends))
        and _proc_ppid(p.name) == 1
    }


def _regions() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("triton_*_backend_shm_region_*")}


@pytest.mark.slow
def test_the_next_start_removes_what_a_killed_server_left(model_repository, tmp_path):
    from stylize.server.cleanup import _SHM_MIN_AGE_S
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
    # Regions an orphan names on its command line are its dead server's: removed whatever their age (left young
    # here). A region nobody names is removed only once older than _SHM_MIN_AGE_S: a young one may belong to a
    # server starting at that moment.
    from stylize.server.cleanup import _proc_cmdline

    named = {a for pid in orphans for a in _proc_cmdline(str(pid)) if "_backend_shm_region_" in a}
    assert named and named <= ours
    aged = time.time() - 2 * _SHM_MIN_AGE_S
    for name in ours - named:
        os.utime(Path("/dev/shm") / name, (aged, aged))
    stranger_young = Path("/dev/shm") / f"triton_python_backend_shm_region_{uuid.uuid4()}"
    stranger_old = Path("/dev/shm") / f"triton_python_backend_shm_region_{uuid.uuid4()}"
    for f in (stranger_young, stranger_old):
        f.write_bytes(bytes(4096))
    os.utime(stranger_old, (aged, aged))
    try:
        with start_local(repo, cache_dir=cache) as again:
            assert set(again.cleanup.killed_stubs) >= orphans
            assert not _orphan_stubs(backends)  # the new server's stubs have their parent
            assert not orphans & {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
            removed = set(again.cleanup.removed_regions)
            assert ours <= removed and not ours & _regions()
            assert stranger_old.name in removed and not stranger_old.exists()
            assert stranger_young.exists()  # too young to be judged a leftover: left alone (removed at a later start)
    finally:
        stranger_young.unlink(missing_ok=True)
        stranger_old.unlink(missing_ok=True)
