"""Video through the raw-frame path: decode (PyAV) -> `<id>_net` with several requests in flight -> encode.

Three stages overlap, joined by bounded queues so memory stays flat whatever the length of the video:

    decode thread        demux + decode video frames (upright RGB arrays)
    main thread          group frames into requests (single frames or batches; overlapping windows for BasicVSR),
                         submit them to a pool of `concurrency` workers
    writer thread        take the results in order, encode them (H.264 by default; H.265, VP9, AV1; 8 or 10 bits)
                         in resumable segments

What comes out: the same number of frames with the same timestamps (so the same fps, constant or variable), sides
multiplied by the model's scale (an odd side loses its last row/column: 4:2:0 needs even sides), upright, with the
source's colour tags, and every other stream of the source (audio tracks, subtitles, chapters, metadata): see
stylize.sdk.video_container for how the container, rotation, colour, 10-bit input and resume are handled. Frames
larger than the model's tile size go through in overlapping tiles (StylizeClient.infer_frames), so HD frames cost
the server no more memory than an image request; windows of a video network are cut alike, every frame at the same
places (tile_window).

The output is written under a temporary name in the destination folder and renamed at the very end: an interrupted
or failed run leaves nothing under the final name. Its finished segments stay in a hidden work folder next to it
(`.<name>.stylize-work`), and the same command run again continues from there (``resume=False`` starts over).

Windowed models (basicvsr_x4, window T): windows of T frames overlap by 2*margin frames; each window contributes only
its centre frames [margin, T - margin) (the first window from frame 0, the last to the end), so every frame is
restored with `margin` frames of context on each side wherever the clip allows. Clips shorter than T are mirrored in
time to fill one window.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import numpy as np

from stylize.contract.descriptors import DEFAULT_VIDEO_MODEL
from stylize.contract.errors import InvalidInput
from stylize.contract.frames import RawModel
from stylize.contract.tiling import WINDOW_TILE, WINDOW_TILE_OVERLAP
from stylize.sdk.video_container import (
    CODECS,
    MUX_OPTIONS,
    PRESETS,
    Job,
    SegmentStore,
    VideoError,
    join_segments,
    output_codec,
    plan_streams,
    probe_picture,
    remux,
)

if TYPE_CHECKING:
    from av.container import InputContainer
    from tqdm import tqdm


class _Counts(Protocol):
    retries: int


class FrameClient(Protocol):
    """What video needs of a client (StylizeClient is one; video never imports it): the network behind a model,
    frames through it, and the retry count for the report."""

    @property
    def stats(self) -> _Counts: ...  # StylizeClient.stats (ClientStats); read-only here, so any _Counts will do

    def raw_model(self, model: str | None = None, *, version: int | str | None = None) -> RawModel: ...

    def infer_frames(
        self, frames: np.ndarray, model: str | None = None, *, version: int | str | None = None, tile: int | None = None
    ) -> np.ndarray: ...


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers that take H.264 (the default codec)

QUEUE_TIMEOUT = 0.1  # seconds between checks of the stop flag while a stage waits
SEGMENT_SECONDS = 4  # default segment length: what a resumed run may redo; each segment starts on a keyframe
MAX_FPS = 1000  # fps= bound (a typo such as 2400 for 24 is refused rather than encoded)


@dataclass(frozen=True)
class Window:
    """One request of a windowed model: frames [start, start + T); frames [keep_from, keep_to) of the clip are kept."""

    start: int
    keep_from: int
    keep_to: int


def plan_windows(n: int, window: int, margin: int) -> list[Window]:
    """Overlapping windows covering n frames; each frame is kept from exactly one window (see the module docstring).

    For n < window the single window starts at 0 and its frames beyond n are a mirror of the clip.
    """
    planner = WindowPlanner(window, margin)
    return list(planner.feed(n, eof=True))


class WindowPlanner:
    """Online version of plan_windows: feed the number of frames decoded so far, get the windows now decidable.

    A window is decided once the frame after it exists (then it is not the last one) or at the end of the clip (then
    the last window is shifted back to end on the last frame).
    """

    def __init__(self, window: int, margin: int):
        if window < 1:
            raise ValueError("window must be >= 1")
        if not 0 <= margin or 2 * margin >= window:
            raise ValueError(f"margin {margin} must satisfy 0 <= 2*margin < window ({window})")
        self.window, self.margin = window, margin
        self.covered = 0  # frames [0, covered) are assigned to a window
        self.next_start = 0
        self.done = False

    def feed(self, seen: int, *, eof: bool) -> Iterator[Window]:
        T, m = self.window, self.margin
        while not self.done:
            if not eof and seen < self.next_start + T + 1:
                return
            if eof and seen == 0:
                self.done = True
                return
            start = min(self.next_start, seen - T) if eof else self.next_start
            start = max(start, 0)
            last = eof and start + T >= seen
            keep_to = seen if last else start + T - m
            yield Window(start, self.covered, keep_to)
            self.covered = keep_to
            self.next_start = keep_to - m
            self.done = last

    def oldest_needed(self, seen: int) -> int:
        """Frames before this index will never be part of a window again (the last window may move back T frames)."""
        return max(0, min(self.next_start, seen - self.window))


def window_indices(start: int, window: int, n: int) -> list[int]:
    """Frame indices of a window; past the end of a short clip the clip is mirrored (0 1 2 2 1 0 0 ...)."""
    out = []
    for j in range(start, start + window):
        if j < n:
            out.append(j)
        else:
            period = 2 * n
            i = j % period
            out.append(i if i < n else period - 1 - i)
    return out


@dataclass
class VideoReport:
    src: Path
    dst: Path
    model: str
    frames: int
    fps: float  # frame rate of the output (the clip's, unless fps= set another)
    size_in: tuple[int, int]  # width, height
    size_out: tuple[int, int]
    audio: str  # per track: "copied (aac)", "re-encoded (pcm_s16le -> aac)"; "none"
    seconds: float  # wall time, open to rename
    requests: int
    codec: str = "h264"
    pix_fmt: str = "yuv420p"
    subtitles: str = "none"  # per track: "copied (subrip)", "converted (subrip -> mov_text)", "dropped (...)"
    chapters: int = 0
    rotation: int = 0  # degrees counterclockwise the source asked for, applied to the pixels
    segments: int = 0
    resumed_frames: int = 0  # frames taken from the segments of an interrupted run
    infer_ms: list[float] = field(default_factory=list, repr=False)  # per frame: duration of its request
    latency_ms: list[float] = field(default_factory=list, repr=False)  # per frame: decoded -> encoded
    retries: int = 0

    @property
    def fps_end_to_end(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @staticmethod
    def _pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else 0.0

    def summary(self) -> str:
        w, h = self.size_out
        text = (
            f"{self.dst}: {self.frames} frames {self.size_in[0]}x{self.size_in[1]} -> {w}x{h} at {self.fps:g} fps, "
            f"audio {self.audio}; subtitles {self.subtitles}; {self.chapters} chapters; {self.codec} {self.pix_fmt}; "
            f"{self.seconds:.1f} s, {self.fps_end_to_end:.2f} frames/s end to end; "
            f"per-frame request latency p50 {self._pct(self.infer_ms, 50):.0f} ms p95 {self._pct(self.infer_ms, 95):.0f} ms, "
            f"decode-to-encode p50 {self._pct(self.latency_ms, 50):.0f} ms; {self.requests} requests ({self.model})"
        )
        if self.resumed_frames:
            text += f"; resumed: {self.resumed_frames} frames from an interrupted run"
        if self.retries:
            text += f"; {self.retries} attempts retried after the server was unavailable"
        return text


@dataclass
class Frame:
    index: int
    array: np.ndarray  # upright uint8 RGB: what the network sees
    source16: np.ndarray | None  # high-bit-depth input: the upright 16-bit RGB (see stylize.sdk.video_container)
    pts: int | None
    time_base: Fraction | None
    decoded_at: float


class Stop(Exception):
    """Another stage failed or the run was interrupted."""


def queue_put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise Stop
        try:
            q.put(item, timeout=QUEUE_TIMEOUT)
            return
        except queue.Full:
            continue


def queue_get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise Stop
        try:
            return q.get(timeout=QUEUE_TIMEOUT)
        except queue.Empty:
            continue


def import_av() -> ModuleType:
    try:
        import av
    except ImportError as e:
        raise ImportError("video needs PyAV: pip install 'stylize[video]'") from e
    return av


def temp_path(dst: Path) -> Path:
    """Hidden temporary name next to dst, keeping the extension (the muxer is chosen from it)."""
    return dst.with_name(f".{dst.stem}.partial-{secrets.token_hex(4)}{dst.suffix}")


def upscale_video(
    client: FrameClient,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    model: str = DEFAULT_VIDEO_MODEL,
    version: int | str | None = None,
    codec: str = "h264",
    bit_depth: int | None = None,
    crf: int | None = None,
    preset: str = "medium",
    concurrency: int = 4,
    batch: int = 1,
    window_margin: int | None = None,
    segment_frames: int | None = None,
    resume: bool = True,
    tile: int | None = None,
    progress: bool | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    outscale: float | None = None,
    fps: float | None = None,
) -> VideoReport:
    """Run every frame of ``src`` through ``model``'s network and write ``dst``, keeping every other stream.

    ``codec``: h264 (libx264), h265 (libx265), vp9 (libvpx-vp9) or av1 (libsvtav1); ``bit_depth`` 8 or 10 (None:
    10 for input with more than 8 bits per sample, else 8). ``crf``: constant quality (None: the codec's default,
    18 for H.264; 0..51 for H.264/H.265, 0..63 for VP9/AV1), ``preset``: x264 preset names, mapped onto each
    encoder's speed setting.
    ``concurrency``: requests in flight; ``batch``: frames per request (on CPU the network runs one request per
    execution: merged batches measured slower per frame there; a GPU repository's batcher merges them).
    ``window_margin`` (windowed models): context frames dropped on each side of a window, default window // 3.
    ``segment_frames``: frames per resumable segment (None: SEGMENT_SECONDS of the clip); ``resume``: continue from
    the finished segments an interrupted run of the same job left (False: start over, keep nothing on failure).
    ``tile`` (windowed models): frames larger than ``tile`` x ``tile`` go through in overlapping tiles, every frame
    of a window cut alike (None: WINDOW_TILE; 0: never), so the server's memory is bounded whatever the frame size.
    ``outscale`` (Real-ESRGAN's option): output sides = ``outscale`` x the input's; the network's picture is resized
    to that (Lanczos, as the image ensembles' OUTSCALE; None: the network's own scale). ``fps`` (Real-ESRGAN's
    option): the output's frame rate; every frame is kept and shown 1/fps apart, so the video then lasts frames /
    fps (audio and subtitles keep their own timing, as Real-ESRGAN's script does; None: the source's timestamps).
    ``progress``: tqdm bar on stderr (None: only when stderr is a terminal).
    ``on_progress(frames_written, total)``: called from the encoding thread after each frame is written (``total``
    is the container's frame count, None when it does not say); an exception it raises stops the run and is raised
    here (how a caller cancels).
    """
    av = import_av()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InvalidInput(f"no such video: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise InvalidInput(f"refusing to overwrite the input {src}")
    if codec not in CODECS:
        raise InvalidInput(f"codec {codec!r}; expected one of {', '.join(CODECS)}")
    spec = CODECS[codec]
    if dst.suffix.lower() not in spec.containers:
        raise InvalidInput(
            f"cannot write {spec.title} into {dst.suffix or 'a file without extension'}; "
            f"use one of {', '.join(sorted(spec.containers))}"
        )
    crf = spec.crf_default if crf is None else crf
    if not 0 <= crf <= spec.crf_max:
        raise InvalidInput(f"crf {crf}; expected 0..{spec.crf_max} for {spec.title}")
    if preset not in PRESETS:
        raise InvalidInput(f"preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if concurrency < 1 or batch < 1 or (segment_frames is not None and segment_frames < 1):
        raise ValueError("concurrency, batch and segment_frames must be >= 1")
    from stylize.contract.step import MAX_OUTSCALE

    if outscale is not None and not (np.isfinite(outscale) and 0 < outscale <= MAX_OUTSCALE):
        raise InvalidInput(f"outscale {outscale}; expected 0 < outscale <= {MAX_OUTSCALE:g}")
    if fps is not None and not (np.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise InvalidInput(f"fps {fps}; expected 0 < fps <= {MAX_FPS}")
    out_rate = Fraction(fps).limit_denominator(1001) if fps is not None else None  # 23.976 -> 2997/125

    raw = client.raw_model(model, version=version)  # fails fast on an unknown model or an unreachable server
    margin = None
    window_tile = 0
    if raw.window:
        margin = raw.window // 3 if window_margin is None else window_margin
        WindowPlanner(raw.window, margin)  # validates the margin
        batch = 1
        window_tile = WINDOW_TILE if tile is None else tile
        if window_tile and window_tile <= 2 * WINDOW_TILE_OVERLAP:
            raise InvalidInput(f"tile {window_tile} must be more than twice the overlap ({WINDOW_TILE_OVERLAP})")

    t_start = time.monotonic()
    retries_before = client.stats.retries
    try:
        picture = probe_picture(av, src)
        inp: InputContainer = av.open(str(src))
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise InvalidInput(f"cannot open {src} as a video: {e}") from None
    depth = bit_depth if bit_depth is not None else (10 if picture.bit_depth > 8 else 8)
    store: SegmentStore | None = None
    seg: dict[str, Any] = {}  # the segment being written: k, container, stream
    stop = threading.Event()
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="stylize-video")
    tmp = temp_path(dst)
    finished = False
    try:
        spec, pix_fmt = output_codec(av, codec, depth, dst.suffix)
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"  # frame-threaded decoding: the decode thread must keep up with the pool
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        time_base = vs.time_base or 1 / Fraction(rate)
        w, h = picture.upright_size
        net_w, net_h = w * raw.scale, h * raw.scale  # what the network returns (padding cropped)
        out_w, out_h = (
            (net_w, net_h) if outscale is None else (max(2, round(w * outscale)), max(2, round(h * outscale)))
        )
        out_w, out_h = out_w - out_w % 2, out_h - out_h % 2
        resized = (out_w, out_h) != (net_w - net_w % 2, net_h - net_h % 2)  # --outscale: resize each frame
        plan = plan_streams(inp, dst.suffix, spec)
        n_seg = segment_frames or max(1, round(float(rate) * SEGMENT_SECONDS))
        if out_rate is not None:  # --fps: every frame, 1/fps apart
            rate, time_base = out_rate, 1 / out_rate
        st = src.stat()
        store = SegmentStore(
            dst,
            Job(
                str(src.resolve()),
                st.st_size,
                st.st_mtime_ns,
                model,
                str(version or ""),
                spec.name,
                pix_fmt,
                crf,
                preset,
                n_seg,
                batch,
                margin,
                window_tile,
                outscale=outscale,
                fps=str(out_rate or ""),
            ),
        )
        resume_from = store.open(resume) * n_seg
        high_depth = depth > 8

        decoded: queue.Queue = queue.Queue(maxsize=2 * concurrency * max(batch, raw.window or 1))
        jobs: queue.Queue = queue.Queue(maxsize=concurrency)
        total = vs.frames or None
        bar = _progress_bar(total, progress, src.name)
        report = VideoReport(
            src=src,
            dst=dst,
            model=model,
            frames=0,
            fps=float(rate),
            size_in=(w, h),
            size_out=(out_w, out_h),
            audio=", ".join(plan.audio) or "none",
            seconds=0.0,
            requests=0,
            codec=spec.name,
            pix_fmt=pix_fmt,
            subtitles=", ".join(plan.subtitles) or "none",
            chapters=len(inp.chapters()),
            rotation=picture.rotation,
        )

        def guarded(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    fn()
                except Stop:
                    pass
                except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
                    errors.append(e)
                    stop.set()

            return run

        last_duration: list[Fraction | None] = [None]  # of the last frame (the joined stream ends with it)
        decoded_frames = [0]

        def decode() -> None:
            index = 0
            for packet in inp.demux(vs):
                for frame in packet.decode():
                    last_duration[0] = frame.duration * frame.time_base if frame.duration and frame.time_base else None
                    if out_rate is not None:
                        last_duration[0] = 1 / out_rate
                    arr, source16 = picture.to_rgb(frame)
                    queue_put(
                        decoded,
                        Frame(
                            index, arr, source16 if high_depth else None, frame.pts, frame.time_base, time.monotonic()
                        ),
                        stop,
                    )
                    index += 1
            decoded_frames[0] = index
            queue_put(decoded, None, stop)

        def open_segment(k: int) -> None:
            o = av.open(str(store.part(k)), "w", format="nut", container_options=MUX_OPTIONS)
            s = o.add_stream(spec.encoder, rate=rate, options=spec.options(crf, preset))
            s.width, s.height, s.pix_fmt = out_w, out_h, pix_fmt
            s.time_base = time_base
            s.codec_context.time_base = time_base  # frames keep their own timestamps (variable frame rate)
            picture.tag(s.codec_context)
            seg.update(k=k, out=o, stream=s)

        def close_segment() -> None:
            o, s = seg["out"], seg["stream"]
            for p in s.encode(None):
                o.mux(p)
            o.close()
            store.finish(seg["k"])
            seg.clear()
            report.segments += 1

        def write() -> None:
            report.frames = report.resumed_frames = 0
            while True:
                item = queue_get(jobs, stop)
                if item is None:
                    break
                future, frames, keep = item
                seconds, result = future.result()
                report.requests += 1
                outs = result[keep] if keep is not None else result
                if len(outs) != len(frames):
                    raise VideoError(f"{model} returned {len(outs)} frames for {len(frames)}")
                for f, arr in zip(frames, outs):
                    if f.index < resume_from:  # in a finished segment (a window reaching back into it)
                        continue
                    if not report.frames and resume_from:
                        report.frames = report.resumed_frames = resume_from
                        if bar is not None:
                            bar.update(resume_from)
                    want_h, want_w = (net_h, net_w) if resized else (out_h, out_w)
                    if arr.shape[0] < want_h or arr.shape[1] < want_w:
                        raise VideoError(f"{model} returned {arr.shape[1]}x{arr.shape[0]}, expected {want_w}x{want_h}")
                    k = f.index // n_seg
                    if seg and seg["k"] != k:
                        close_segment()
                    if not seg:
                        open_segment(k)
                    if resized:
                        vf = picture.frame_from(
                            av,
                            outscaled(arr[:net_h, :net_w], f.source16, raw.scale, (out_h, out_w)),
                            None,
                            raw.scale,
                            pix_fmt,
                        )
                    else:
                        vf = picture.frame_from(av, arr[:out_h, :out_w], f.source16, raw.scale, pix_fmt)
                    if out_rate is not None:
                        vf.time_base, vf.pts = time_base, f.index
                    else:
                        vf.time_base = f.time_base if f.time_base is not None else time_base
                        vf.pts = f.pts if f.pts is not None else round(f.index / rate / vf.time_base)
                    for p in seg["stream"].encode(vf):
                        seg["out"].mux(p)
                    report.frames += 1
                    report.infer_ms.append(seconds * 1000)
                    report.latency_ms.append((time.monotonic() - f.decoded_at) * 1000)
                    if bar is not None:
                        bar.update(1)
                    if on_progress is not None:
                        on_progress(report.frames, total)
            if seg:
                close_segment()

        def timed_infer(frames: np.ndarray) -> tuple[float, np.ndarray]:
            t0 = time.monotonic()
            if window_tile:
                result = tile_window(
                    client,
                    frames,
                    model,
                    version=version,
                    scale=raw.scale,
                    multiple=raw.size_multiple,
                    tile=window_tile,
                )
            else:
                result = client.infer_frames(frames, model, version=version)
            return time.monotonic() - t0, result

        for fn, name in ((decode, "stylize-decode"), (write, "stylize-encode")):
            t = threading.Thread(target=guarded(fn), name=name, daemon=True)
            t.start()
            threads.append(t)

        try:
            schedule(decoded, jobs, stop, pool, timed_infer, raw.window, margin, batch, resume_from)
        except Stop:
            pass
        for t in threads:
            while t.is_alive():
                t.join(timeout=QUEUE_TIMEOUT)
        if bar is not None:
            bar.close()
        if errors:
            if isinstance(errors[0], av.error.FFmpegError):  # a corrupt stream mid-file, an encoder refusing a frame
                raise VideoError(f"{src}: {errors[0]}") from None
            raise errors[0]
        if not report.frames and resume_from:  # every segment was already there
            report.frames = report.resumed_frames = decoded_frames[0]
        inp.close()
        joined = store.dir / "video.mp4"
        join_segments(av, store.segments(), joined, last_duration[0])
        remux(joined, src, tmp, plan)
        os.replace(tmp, dst)
        finished = True
        report.seconds = time.monotonic() - t_start
        report.retries = client.stats.retries - retries_before
        return report
    except BaseException:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if seg:  # a half-written segment: never kept
            assert store is not None  # seg is only opened in the store
            try:
                seg["out"].close()
            except Exception:  # noqa: BLE001 - best effort on an already failed run; the file is deleted anyway
                pass
            store.part(seg["k"]).unlink(missing_ok=True)
        inp.close()
        tmp.unlink(missing_ok=True)
        if store is not None and (finished or not resume or not store.segments()):
            store.discard()


def outscaled(net: np.ndarray, source16: np.ndarray | None, scale: int, size: tuple[int, int]) -> np.ndarray:
    """``outscale``: the network's picture resized to ``size`` (h, w) with the image ensembles' resize (Lanczos,
    antialiased when shrinking). High-bit-depth input: the 16-bit picture (flat areas from the source, as without
    outscale) is resized, and uint16 comes back."""
    from stylize.engine.imaging import resize
    from stylize.sdk.video_container import flat_areas_from_source

    if source16 is None:
        return resize(net, size)
    pic = flat_areas_from_source(net, source16, scale) if scale > 1 else net.astype(np.uint16) * 257
    out: np.ndarray = np.clip(np.rint(resize(pic, size)), 0, 65535).astype(np.uint16)  # numpy's ufuncs return Any
    return out


def tile_window(
    client: FrameClient,
    window: np.ndarray,
    model: str,
    *,
    version: int | str | None,
    scale: int,
    multiple: int,
    tile: int,
    overlap: int = WINDOW_TILE_OVERLAP,
) -> np.ndarray:
    """One TxHxWx3 window through a windowed network in overlapping spatial tiles (feathered seams; one tile per
    request), or whole when a frame is within tile x tile pixels."""
    from stylize.contract.tiling import run_tiled

    def run(tiles: np.ndarray) -> np.ndarray:
        return np.stack([client.infer_frames(t, model, version=version) for t in tiles])

    return run_tiled(window, run=run, scale=scale, tile=tile, overlap=overlap, batch=1, multiple=multiple)[0]


def schedule(
    decoded: queue.Queue,
    jobs: queue.Queue,
    stop: threading.Event,
    pool: ThreadPoolExecutor,
    infer: Callable[[np.ndarray], tuple[float, np.ndarray]],
    window: int | None,
    margin: int | None,
    batch: int,
    resume_from: int = 0,
) -> None:
    """Main-thread stage: frames -> requests in flight, in output order.

    Requests are grouped exactly as in a run from the start, and those whose kept frames all lie before
    ``resume_from`` (in finished segments) are not sent: a resumed run computes the remaining frames identically.
    """
    if window:
        planner = WindowPlanner(window, margin or 0)
        buf: dict[int, Frame] = {}
        seen = 0
        eof = False
        while not planner.done:
            item = queue_get(decoded, stop)
            if item is None:
                eof = True
            else:
                buf[item.index] = item
                seen += 1
            for win in planner.feed(seen, eof=eof):
                if win.keep_to <= resume_from:
                    continue
                idx = window_indices(win.start, window, seen)
                stack = np.stack([buf[i].array for i in idx])
                kept = [buf[i] for i in range(win.keep_from, win.keep_to)]
                keep = slice(win.keep_from - win.start, win.keep_to - win.start)
                queue_put(jobs, (pool.submit(infer, stack), kept, keep), stop)
            for i in [i for i in buf if i < planner.oldest_needed(seen)]:
                del buf[i]
            if eof:
                break
    else:
        group: list[Frame] = []
        while True:
            item = queue_get(decoded, stop)
            if item is not None:
                group.append(item)
            if group and (item is None or len(group) >= batch):
                if group[-1].index >= resume_from:
                    stack = np.stack([f.array for f in group])
                    queue_put(jobs, (pool.submit(infer, stack), group, None), stop)
                group = []
            if item is None:
                break
    queue_put(jobs, None, stop)


def _progress_bar(total: int | None, progress: bool | None, name: str) -> "tqdm | None":
    if progress is False:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=name, disable=None if progress is None else False, leave=True)


__all__ = [
    "VIDEO_SUFFIXES",
    "SEGMENT_SECONDS",
    "WINDOW_TILE",
    "WINDOW_TILE_OVERLAP",
    "tile_window",
    "upscale_video",
    "VideoReport",
    "VideoError",
    "Window",
    "WindowPlanner",
    "plan_windows",
    "window_indices",
    "temp_path",
]
