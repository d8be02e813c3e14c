"""One memory budget for the image steps of a server: admission by estimated cost, so that a pod's worst case is a
number it can hold (issue 13 #4, docs/reliability.md).

What a stub keeps and what it only borrows: OpenVINO keeps the buffers of the largest request its compiled network
ran until the network is closed (measured: a 768² request left 677 MiB resident after a 16² one; closing the
compiled model gave it back). So each stub *keeps* its network's peak at the largest call it makes, which the
limits bound: a network model's at ``max_request_pixels``, an image step's at one tile (or, untiled, at its
``max_side``). On top of that an image step *borrows*, for one image, arrays that grow with the image (decoded
input, the network's output, the resized and recomposed result, the encoded bytes) and gives them back when it
answers. Borrowed memory is what the limits do not bound in sum: 12 step instances at their largest images at once
would take tens of GiB. So the image steps reserve each image's estimated cost (:data:`COSTS`, the measured line
of ``python -m stylize.loadtest.experiments.net_memory``, rounded up) from one budget shared by every process of the
server, before the costly part, and give it back once the request is answered. An image that does not fit waits
for others to finish, up to ``wait_s``, then is refused with a retryable error (the SDK retries UNAVAILABLE); an
image whose cost alone is above the whole budget is refused at once (INVALID_ARGUMENT): it can never run there.

The pod's worst case is then: the idle server + what every stub keeps + the budget + /dev/shm + the response cache
(``python -m stylize_k8s.memory_budget`` adds it up and checks the CPU pod's limit holds it).

The budget is off unless ``STYLIZE_MEMORY_BUDGET_MIB`` is set (the CPU pod sets it: k8s/overlays/cpu).

How it is shared: one file per reservation in a folder (``STYLIZE_MEMORY_BUDGET_DIR``, default
``/dev/shm/stylize-memory-budget``: memory-backed, per pod), named by the reserving process's pid and start time and
holding its MiB; one ``flock`` around reading and writing them. A reservation whose process is gone (a killed stub,
a container restart that left the folder; a recycled pid has another start time) is not counted and is removed.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

BUDGET_ENV = "STYLIZE_MEMORY_BUDGET_MIB"
DIR_ENV = "STYLIZE_MEMORY_BUDGET_DIR"
WAIT_ENV = "STYLIZE_MEMORY_BUDGET_WAIT_S"
DEFAULT_DIR = Path("/dev/shm/stylize-memory-budget")
DEFAULT_WAIT_S = 30.0
_POLL_S = 0.05


@dataclass(frozen=True)
class Cost:
    """Estimated memory one image borrows in the image step (MiB): a line through the measured points, rounded up,
    by the image's *effective* output pixels: the larger of the output and the input x scale² (the network's
    output, before an outscale below the model's scale shrinks it)."""

    fixed_mib: float  # the line's intercept: may be negative (the line is fitted where images are tiled)
    kib_per_output_pixel: float

    def image(self, output_pixels: int) -> float:
        return max(MIN_COST_MIB, self.fixed_mib + self.kib_per_output_pixel * output_pixels / 1024)


MIN_COST_MIB = 8.0  # what the smallest image is charged

# Measured by python -m stylize.loadtest.experiments.net_memory (k8s/capacity/net-memory.json, each image step's
# "borrowed_mib": its growth beyond its network's own), OpenVINO fp32, a 16-bit RGBA PNG in and PNG out (the widest
# buffers): the slope x 1.05 and the intercept that covers both points + 8 MiB. tests/unit/test_memory_budget.py
# checks that every measured point is covered.
COSTS: Mapping[str, Cost] = {
    "animeganv2": Cost(fixed_mib=-14, kib_per_output_pixel=0.093),
    "esrgan_x4": Cost(fixed_mib=-92, kib_per_output_pixel=0.045),
    "esrgan_anime_x4": Cost(fixed_mib=-94, kib_per_output_pixel=0.045),
    "animevideo_x2": Cost(fixed_mib=-140, kib_per_output_pixel=0.088),
    "animevideo_x3": Cost(fixed_mib=-163, kib_per_output_pixel=0.07),
    "animevideo_x4": Cost(fixed_mib=-173, kib_per_output_pixel=0.062),
}


class BudgetExceeded(Exception):
    """The request's cost is above the whole budget: it can never run on this server (not retryable)."""


class BudgetBusy(Exception):
    """The budget stayed in use by other requests for the whole wait (retryable)."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class MemoryBudget:
    def __init__(self, total_mib: float, directory: Path = DEFAULT_DIR, *, wait_s: float = DEFAULT_WAIT_S):
        if total_mib <= 0:
            raise ValueError(f"memory budget {total_mib} MiB; expected > 0")
        self.total_mib = float(total_mib)
        self.directory = Path(directory)
        self.wait_s = wait_s
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.directory / ".lock"
        self._me = f"{os.getpid()}-{_start_time(os.getpid())}"
        self._seq = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "MemoryBudget | None":
        env = os.environ if environ is None else environ
        raw = env.get(BUDGET_ENV, "").strip()
        if not raw:
            return None
        return cls(float(raw), Path(env.get(DIR_ENV) or DEFAULT_DIR), wait_s=float(env.get(WAIT_ENV) or DEFAULT_WAIT_S))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def in_use_mib(self) -> float:
        """MiB reserved by live processes (removes the reservations of dead ones); call under the lock."""
        used = 0.0
        for p in self.directory.glob("*.mib"):
            pid, start = p.name.split("-")[:2]
            if _start_time(int(pid)) != start:
                p.unlink(missing_ok=True)  # its process is gone: a killed stub, a restarted container
                continue
            try:
                used += float(p.read_text() or 0)
            except (FileNotFoundError, ValueError):
                continue
        return used

    def _try(self, mib: float) -> Path | None:
        with self._locked():
            if self.in_use_mib() + mib > self.total_mib:
                return None
            self._seq += 1
            path = self.directory / f"{self._me}-{self._seq}.mib"
            path.write_text(f"{mib:.1f}")
            return path

    @contextmanager
    def reserve(self, mib: float, *, what: str) -> Iterator[None]:
        """Hold ``mib`` of the budget while the block runs. ``what`` names the request in the errors."""
        if mib > self.total_mib:
            raise BudgetExceeded(
                f"{what} needs about {mib:,.0f} MiB, more than this server's whole memory budget "
                f"({self.total_mib:,.0f} MiB, {BUDGET_ENV}): send a smaller input"
            )
        deadline = time.monotonic() + self.wait_s
        while (path := self._try(mib)) is None:
            if time.monotonic() >= deadline:
                raise BudgetBusy(
                    f"{what} needs about {mib:,.0f} MiB of this server's memory budget "
                    f"({self.total_mib:,.0f} MiB), which other requests have held for {self.wait_s:g} s: "
                    "retry later"
                )
            time.sleep(_POLL_S)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


__all__ = [
    "BUDGET_ENV",
    "DIR_ENV",
    "WAIT_ENV",
    "COSTS",
    "MIN_COST_MIB",
    "Cost",
    "MemoryBudget",
    "BudgetBusy",
    "BudgetExceeded",
]
