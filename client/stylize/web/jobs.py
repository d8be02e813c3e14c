"""Jobs: one uploaded file through one model. Ids are ours (random), never the request's; so are file names.

A job's life: queued (waiting for a slot towards Triton) -> running -> done | failed | cancelled. Progress is a
count of real events (tiles Triton answered, frames written) against a total known in advance (the tile plan, the
container's frame count). Every change bumps ``version`` and wakes the Server-Sent Events streams watching it.

The store keeps at most ``max_jobs`` jobs, drops finished ones after ``result_ttl`` seconds, and keeps the results
of all finished jobs within ``result_bytes`` (oldest dropped first). Uploads are written to ``<work>/uploads`` and
removed when the job ends, whatever the ending; video results live in ``<work>/results`` until dropped.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import tempfile
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")

_ID = re.compile(r"[0-9a-f]{24}")


class Busy(Exception):
    """Every kept job is still queued or running: no room for another."""


class Cancelled(Exception):
    """The job was cancelled (DELETE, or the page server is stopping)."""


def display_name(raw: str | None, fallback: str = "upload") -> str:
    """A file name for display and for the download's name: no folders, no control characters, bounded length.
    It never becomes a path on this machine."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip().lstrip(".")
    return name[:120] or fallback


@dataclass(eq=False, kw_only=True)
class Job:
    id: str
    kind: str  # "image" | "video"
    format: str | None  # what the first bytes say ("PNG", "MP4", ...; None: unknown)
    name: str  # display name (see display_name)
    model: str
    options: dict[str, Any]
    upload_bytes: int
    created: float = field(default_factory=time.time)
    state: str = "queued"
    unit: str = "tile"  # what progress counts: "tile" | "frame"
    done: int = 0
    total: int | None = None
    stage: str = "waiting for a free slot towards Triton"
    cache: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    input_size: tuple[int, int] | None = None  # (width, height)
    output_size: tuple[int, int] | None = None
    media_type: str | None = None
    result_bytes: int = 0
    seconds: float | None = None  # processing time (after the upload, queueing excluded)
    detail: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    version: int = 0
    # not part of the API
    upload_path: Path | None = field(default=None, repr=False)
    result_path: Path | None = field(default=None, repr=False)
    result_data: bytes | None = field(default=None, repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)  # read by worker threads
    task: asyncio.Task | None = field(default=None, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    # ---- changes (event-loop thread only; worker threads go through loop.call_soon_threadsafe) ----------------
    def touch(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_change(self, seen: int, timeout: float) -> None:
        """Return when ``version`` differs from ``seen`` or after ``timeout`` seconds."""
        if self.version != seen:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def update(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        self.touch()

    def progress(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        unit = self.unit + ("s" if (self.total or done) != 1 else "")
        self.stage = f"{unit} {done} of {self.total}" if self.total else f"{unit}: {done}"
        self.touch()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_json(self) -> dict[str, Any]:
        result = None
        if self.state == "done":
            result = {
                "url": f"/api/jobs/{self.id}/result",
                "download_url": f"/api/jobs/{self.id}/result?download=1",
                "media_type": self.media_type,
                "bytes": self.result_bytes,
                "filename": self.download_name,
                "width": self.output_size[0] if self.output_size else None,
                "height": self.output_size[1] if self.output_size else None,
            }
        return {
            "id": self.id,
            "kind": self.kind,
            "format": self.format,
            "name": self.name,
            "model": self.model,
            "options": self.options,
            "upload_bytes": self.upload_bytes,
            "state": self.state,
            "progress": {"unit": self.unit, "done": self.done, "total": self.total, "stage": self.stage},
            "cache": self.cache,
            "error": self.error,
            "input": {"width": self.input_size[0], "height": self.input_size[1]} if self.input_size else None,
            "result": result,
            "seconds": self.seconds,
            "detail": self.detail,
            "created": self.created,
            "version": self.version,
        }

    @property
    def download_name(self) -> str:
        stem = self.name.rsplit(".", 1)[0] if "." in self.name else self.name
        ext = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}.get(
            self.media_type or "", ""
        )
        return f"{stem}_{self.model}{ext}"


class JobStore:
    """The jobs of this page server, their private folders and their bounds."""

    def __init__(self, *, max_jobs: int, result_ttl: float, result_bytes: int, work_dir: Path | None = None):
        self.max_jobs, self.result_ttl, self.budget = max_jobs, result_ttl, result_bytes
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._own_root = work_dir is None
        self.root = Path(tempfile.mkdtemp(prefix="stylize-web-")) if work_dir is None else Path(work_dir)
        self.uploads = self.root / "uploads"
        self.results = self.root / "results"
        for d in (self.root, self.uploads, self.results):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    # ---- lookup ----------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id) if _ID.fullmatch(job_id) else None

    def __iter__(self):
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    # ---- creation --------------------------------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(12)

    def upload_path(self, job_id: str) -> Path:
        return self.uploads / f"{job_id}.upload"

    def result_path(self, job_id: str, suffix: str) -> Path:
        return self.results / f"{job_id}{suffix}"

    def add(self, job: Job) -> None:
        self.sweep()
        while len(self._jobs) >= self.max_jobs:
            oldest = next((j for j in self._jobs.values() if j.finished), None)
            if oldest is None:
                raise Busy(f"{len(self._jobs)} jobs are queued or running; try again when some have finished")
            self.drop(oldest)
        self._jobs[job.id] = job

    # ---- removal and bounds ----------------------------------------------------------------------------------
    def drop(self, job: Job) -> None:
        """Forget a finished job and delete its files (an active one is cancelled first by the caller)."""
        self._jobs.pop(job.id, None)
        self.release_files(job)

    @staticmethod
    def release_files(job: Job) -> None:
        job.result_data = None
        for path in (job.upload_path, job.result_path):
            if path is not None:
                path.unlink(missing_ok=True)

    def kept_bytes(self) -> int:
        return sum(j.result_bytes for j in self._jobs.values() if j.state == "done")

    def sweep(self, now: float | None = None) -> None:
        """Drop finished jobs past their time, then the oldest results while over the byte budget (the newest
        result always stays, even alone over the budget: it was just made for someone)."""
        now = time.time() if now is None else now
        for job in list(self._jobs.values()):
            if job.finished and job.finished_at is not None and now - job.finished_at > self.result_ttl:
                self.drop(job)
        done = [j for j in self._jobs.values() if j.state == "done"]
        total = sum(j.result_bytes for j in done)
        for job in done[:-1]:
            if total <= self.budget:
                break
            total -= job.result_bytes
            self.drop(job)

    def close(self) -> None:
        """Delete every file (and the folder, when the store made it)."""
        for job in list(self._jobs.values()):
            self.release_files(job)
        self._jobs.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for d in (self.uploads, self.results):
                shutil.rmtree(d, ignore_errors=True)


__all__ = ["ACTIVE", "FINISHED", "Busy", "Cancelled", "Job", "JobStore", "display_name"]
