"""The page server: the page, its HTTP API (docs/web.md) and the jobs behind it, on Starlette.

    GET    /                       the page (static/index.html; app.js and style.css under /static/)
    GET    /api/health             this server and Triton's health
    GET    /api/models             the server's models, their options and limits
    POST   /api/jobs?model=ID&...  the request body is the file; 202 with the job (its id, state, progress)
    GET    /api/jobs/ID            the job
    GET    /api/jobs/ID/events     Server-Sent Events: the job after every change, until it ends
    GET    /api/jobs/ID/result     the result (``?download=1``: as an attachment); clips support Range requests
    DELETE /api/jobs/ID            cancel it and delete its files

At most ``concurrency`` jobs talk to Triton at a time; uploads are streamed to a private folder and refused past
``max_upload`` bytes. The body must not be sent with a type an HTML form can send (a page on another site could
post one without asking): the page sends ``application/octet-stream``, and a cross-site script sending that type
must first pass a CORS preflight, which this server never grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stylize.contract.errors import InvalidInput, StylizeError
from stylize.sdk.aio import AsyncStylizeClient
from stylize.sdk.request import OPTIONS, build_options
from stylize.sdk.transport import RetryPolicy

from .catalog import Catalog, ModelEntry
from .images import CacheCounter, ImageRunner
from .jobs import ACTIVE, Busy, Cancelled, Job, JobStore, display_name
from .settings import WebSettings
from .sniff import HEAD_BYTES, image_media_type, sniff
from .videos import NO_CACHE, run_video

log = logging.getLogger("stylize.web")

STATIC = Path(__file__).parent / "static"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
SSE_KEEPALIVE = 15.0  # seconds between comments on a quiet event stream (proxies close idle ones)
SWEEP_EVERY = 30.0


class Web:
    """Everything the routes share; made inside the server's event loop (the gRPC aio channels live there)."""

    def __init__(self, settings: WebSettings):
        import tritonclient.grpc.aio as aio

        self.settings = settings
        self.client = AsyncStylizeClient(
            url=settings.url,
            timeout=settings.timeout,
            retry=RetryPolicy(deadline=30),
            admin_key=settings.admin_key or "",
        )
        self.triton = aio.InferenceServerClient(settings.url)  # configs, metadata and statistics (read only)
        self.catalog = Catalog(self.client, self.triton, admin_key=settings.admin_key)
        self.images = ImageRunner(self.client, CacheCounter(self.triton))
        self.store = JobStore(
            max_jobs=settings.max_jobs,
            result_ttl=settings.result_ttl,
            result_bytes=settings.result_bytes,
            work_dir=settings.work_dir,
        )
        self.slots = asyncio.Semaphore(settings.concurrency)

    async def close(self) -> None:
        tasks = [j.task for j in self.store if j.task is not None and not j.task.done()]
        for job in self.store:
            job.cancel.set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        self.store.close()
        await self.client.close()
        await self.triton.close()

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            self.store.sweep()

    # ---- one job ------------------------------------------------------------------------------------------------
    async def run_job(self, job: Job, entry: ModelEntry, options: dict[str, Any]) -> None:
        try:
            async with self.slots:
                if job.cancel.is_set():
                    raise Cancelled()
                t0 = time.monotonic()
                job.update(state="running", stage="sending to Triton")
                if job.kind == "image":
                    await self._image(job, entry, options)
                else:
                    await self._video(job, entry)
                job.seconds = round(time.monotonic() - t0, 3)
                job.state, job.stage = "done", "done"
        except Cancelled:
            self._cancelled(job)
        except asyncio.CancelledError:
            self._cancelled(job)
            raise
        except StylizeError as e:
            job.state, job.stage, job.error = "failed", "failed", self._error(e, job)
            self.store.release_files(job)
        except Exception as e:  # noqa: BLE001 - a bug fails this job, never the page server
            log.exception("job %s (%s) failed", job.id, job.model)
            job.state, job.stage = "failed", "failed"
            job.error = {
                "source": "web",
                "status": None,
                "kind": "internal",
                "message": f"unexpected error while processing it: {type(e).__name__}: {e}",
            }
            self.store.release_files(job)
        finally:
            if job.upload_path is not None:
                job.upload_path.unlink(missing_ok=True)
            job.finished_at = time.time()
            job.touch()
            self.store.sweep()

    def _cancelled(self, job: Job) -> None:
        job.state, job.stage = "cancelled", "cancelled"
        self.store.release_files(job)

    def _error(self, e: StylizeError, job: Job) -> dict[str, Any]:
        message = e.reason if isinstance(e, InvalidInput) else e.message
        for path in (job.upload_path, job.result_path):  # our folders are nobody's business
            if path is not None:
                message = message.replace(str(path), job.name)
        return {"source": "triton" if e.status else "web", "status": e.status, "kind": e.kind, "message": message}

    async def _image(self, job: Job, entry: ModelEntry, options: dict[str, Any]) -> None:
        data = await asyncio.to_thread(job.upload_path.read_bytes)
        job.upload_path.unlink(missing_ok=True)
        result = await self.images.run(data, entry, options, on_progress=job.progress, cancel=job.cancel)
        job.result_data = result.data
        job.result_bytes = len(result.data)
        job.media_type = image_media_type(result.data)
        job.input_size, job.output_size = result.input_size, result.size
        job.cache = result.cache
        job.detail = {"tiles": result.tiles, "path": result.path}

    async def _video(self, job: Job, entry: ModelEntry) -> None:
        job.result_path = self.store.result_path(job.id, ".mp4")
        result = await run_video(
            self.client, job.upload_path, job.result_path, entry, on_progress=job.progress, cancel=job.cancel
        )
        job.media_type = "video/mp4"
        job.result_bytes = job.result_path.stat().st_size
        job.input_size, job.output_size = result.input_size, result.size
        job.cache = NO_CACHE
        job.detail = {"frames": result.frames, "fps": result.fps, "audio": result.audio, "requests": result.requests}


def _web(request: Request) -> Web:
    return request.app.state.web


def _problem(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": message, **extra}}, status_code=status)


def _job(request: Request) -> Job | None:
    return _web(request).store.get(request.path_params["job_id"])


# ---- routes ---------------------------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
    )


async def health(request: Request) -> Response:
    web = _web(request)
    h = await web.client.health()
    return JSONResponse(
        {
            "web": "ok",
            "triton": {"url": h.url, "live": h.live, "ready": h.ready, "version": h.server_version, "error": h.error},
            "jobs": {
                "kept": len(web.store),
                "active": sum(j.state in ACTIVE for j in web.store),
                "result_bytes": web.store.kept_bytes(),
            },
        },
        status_code=200 if h.ok else 503,
    )


async def models(request: Request) -> Response:
    web = _web(request)
    try:
        entries = await web.catalog.entries()
    except StylizeError as e:
        return _problem(503, f"Triton at {web.settings.url} did not answer: {e}", kind=e.kind)
    s = web.settings
    return JSONResponse(
        {
            "triton": {"url": s.url},
            "limits": {
                "max_upload": s.max_upload,
                "concurrency": s.concurrency,
                "result_ttl": s.result_ttl,
                "result_bytes": s.result_bytes,
            },
            "models": [e.to_json() for e in entries.values()],
        }
    )


async def create_job(request: Request) -> Response:
    web = _web(request)
    s = web.settings
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in _FORM_TYPES:
        return _problem(
            415, f"send the file as the request body with Content-Type application/octet-stream, not {ctype}"
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > s.max_upload:
        return _problem(413, f"the file is {int(length)} bytes; the limit is {s.max_upload}", limit=s.max_upload)
    query = request.query_params
    model = query.get("model", "")
    try:
        entry = await web.catalog.get(model) if model else None
    except StylizeError as e:
        return _problem(503, f"Triton at {s.url} did not answer: {e}", kind=e.kind)
    if entry is None:
        return _problem(404, f"no model {model!r} on the server" if model else "say which model: ?model=ID")
    raw = {name: query[name] for name in OPTIONS if query.get(name, "") != ""}
    try:
        options = build_options(raw, model)
    except (InvalidInput, ValueError, TypeError) as e:
        return _problem(400, str(e), kind="invalid_option")

    job_id = web.store.new_id()
    path = web.store.upload_path(job_id)
    size, head = 0, b""
    try:
        with open(path, "xb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > s.max_upload:
                    path.unlink(missing_ok=True)
                    return _problem(
                        413, f"the file is larger than the limit of {s.max_upload} bytes", limit=s.max_upload
                    )
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                f.write(chunk)
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        return Response(status_code=400)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    kind = sniff(head)
    refusal = None
    if size == 0:
        refusal = "the file is empty"
    elif kind.kind == "image" and not entry.takes_images:
        refusal = f"{model} takes videos only (frame windows); this file is not a video container"
    elif kind.kind == "video" and not entry.takes_videos:
        refusal = f"{model} has no network ready for videos"
    if refusal:
        path.unlink(missing_ok=True)
        return _problem(400, refusal, kind="invalid_input")
    job = Job(
        id=job_id,
        kind=kind.kind,
        format=kind.format,
        name=display_name(query.get("name")),
        model=model,
        options=options if kind.kind == "image" else {},
        upload_bytes=size,
        unit="tile" if kind.kind == "image" else "frame",
        upload_path=path,
    )
    if kind.kind == "video" and options:
        job.detail["ignored_options"] = sorted(options)  # the photo options do not apply to clips
    try:
        web.store.add(job)
    except Busy as e:
        path.unlink(missing_ok=True)
        return _problem(503, str(e))
    job.task = asyncio.create_task(web.run_job(job, entry, job.options), name=f"stylize-web-job-{job.id}")
    return JSONResponse(job.to_json(), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})


async def get_job(request: Request) -> Response:
    job = _job(request)
    return JSONResponse(job.to_json()) if job else _problem(404, "no such job (it may have expired)")


async def job_events(request: Request) -> Response:
    job = _job(request)
    if job is None:
        return _problem(404, "no such job (it may have expired)")

    async def stream():
        seen = -1
        while True:
            if job.version != seen:
                seen = job.version
                kind = "end" if job.finished else "job"
                yield f"event: {kind}\nid: {seen}\ndata: {json.dumps(job.to_json())}\n\n"
                if job.finished:
                    return
            before = job.version
            await job.wait_change(before, SSE_KEEPALIVE)
            if job.version == before:
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def _disposition(kind: str, filename: str) -> str:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


async def job_result(request: Request) -> Response:
    job = _job(request)
    if job is None:
        return _problem(404, "no such job (it may have expired)")
    if job.state != "done":
        return _problem(409, f"the job is {job.state}", state=job.state)
    disposition = _disposition("attachment" if request.query_params.get("download") else "inline", job.download_name)
    headers = {"Content-Disposition": disposition, "Cache-Control": "private, max-age=3600"}
    if job.result_path is not None:
        return FileResponse(job.result_path, media_type=job.media_type, headers=headers)
    return Response(job.result_data, media_type=job.media_type, headers=headers)


async def delete_job(request: Request) -> Response:
    web = _web(request)
    job = _job(request)
    if job is None:
        return _problem(404, "no such job (it may have expired)")
    job.cancel.set()
    if job.task is not None and not job.task.done():
        job.task.cancel()
        await asyncio.wait([job.task], timeout=10)
    web.store.drop(job)
    return Response(status_code=204)


# ---- the app --------------------------------------------------------------------------------------------------


class _SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in _SECURITY_HEADERS.items()
                    if k.lower().encode() not in present
                ]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: WebSettings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        web = Web(settings)
        app.state.web = web
        sweeper = asyncio.create_task(web.sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()
            await web.close()

    middleware = [Middleware(_SecurityHeaders)]
    if settings.host in _LOOPBACK:  # DNS rebinding: a site whose name resolves to 127.0.0.1 gets a 400
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"]))
    routes = [
        Route("/", index),
        Route("/api/health", health),
        Route("/api/models", models),
        Route("/api/jobs", create_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/api/jobs/{job_id}", delete_job, methods=["DELETE"]),
        Route("/api/jobs/{job_id}/events", job_events),
        Route("/api/jobs/{job_id}/result", job_result),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


__all__ = ["Web", "create_app"]
