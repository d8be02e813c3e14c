"""The server container's entrypoint: clean the pod's /dev/shm of what a crashed tritonserver left, then become it.

    python -m stylize.server.entrypoint /opt/tritonserver/bin/tritonserver --model-repository=/models ...

The Deployment runs this (k8s/base/deployment.yaml `command:`), not tritonserver directly. Why it is needed: the
pod's /dev/shm is a memory-backed emptyDir, and an emptyDir lives as long as the pod, not the container. A
tritonserver killed by a signal (OOM kill, a crash, a liveness restart after SIGKILL) leaves its python backend's
shared-memory regions (``triton_python_backend_shm_region_*``, those of Python-based backends too) in it; the
restarted container starts a new server next to them, so each restart adds the old regions' size to the pod's
memory (charged to the container's limit) and eats into the emptyDir's sizeLimit, until the pod is deleted.

Why an entrypoint and not an initContainer: init containers run once per pod (before the first start of the app
containers), not when a container restarts, and at that moment the emptyDir is new and empty; the leaks come from
container restarts, and only something that runs at every start of the server container can remove them.

What it removes: every region in /dev/shm that no process maps or names, whatever its age. The launcher's own
clean-up (``clean_up_after_crashes``) keeps regions younger than 120 s, because on a shared machine another server
may have just made one; here nothing else can: this runs before tritonserver starts, in the container's own PID
namespace (the previous instance's processes died with it), and the emptyDir is mounted into this container only.
Orphaned stubs are looked for too (the same function), though a new container has none. Never run it while
tritonserver runs in the container (as a sidecar or an exec probe): tritonserver is PID 1 there, so its live stubs
would look orphaned. Then ``exec``: tritonserver keeps this PID (1 in the pod) and gets SIGTERM directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stylize.server.cleanup import clean_up_after_crashes

SHM_DIR = Path("/dev/shm")


def _flag(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def backend_root(command: list[str]) -> Path:
    """The folder whose ``backends/`` holds the stub tritonserver runs: ``--backend-directory``'s parent, else the
    installation's (``/opt/tritonserver`` for ``/opt/tritonserver/bin/tritonserver``)."""
    backends = _flag(command[1:], "backend-directory")
    return Path(backends).parent if backends else Path(command[0]).resolve().parent.parent


def clean(command: list[str], *, shm_dir: Path = SHM_DIR) -> str:
    """Remove a crashed server's leftovers; returns the line to log (empty when there was nothing)."""
    sizes = {p.name: p.stat().st_size for p in shm_dir.glob("triton_*_backend_shm_region_*") if p.is_file()}
    done = clean_up_after_crashes(backend_root(command), shm_dir=shm_dir, min_age_s=0)
    if not (done.killed_stubs or done.removed_regions):
        return ""
    mib = sum(sizes.get(name, 0) for name in done.removed_regions) / (1 << 20)
    return (
        f"stylize entrypoint: removed {len(done.removed_regions)} shared-memory region(s) a previous server "
        f"left in {shm_dir} ({mib:.0f} MiB), killed {len(done.killed_stubs)} orphaned stub(s)"
    )


def main(argv: list[str] | None = None) -> None:
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        sys.exit("usage: python -m stylize.server.entrypoint /opt/tritonserver/bin/tritonserver [args...]")
    try:
        line = clean(command)
    except OSError as e:  # a clean-up that fails must not keep the server from starting
        line = f"stylize entrypoint: clean-up of {SHM_DIR} failed ({e}); starting anyway"
    if line:
        print(line, file=sys.stderr, flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
