"""Video through the raw-frame path: decode (PyAV) -> `<id>_net` with several requests in flight -> H.264.

Three stages overlap, joined by bounded queues so memory stays flat whatever the length of the video:

    decode thread        demux + decode video frames (RGB arrays), pass audio packets through in demux order
    main thread          group frames into requests (single frames or batches; overlapping windows for BasicVSR),
                         submit them to a pool of `concurrency` workers
    writer thread        take the results in order, encode H.264 (libx264, crf/preset), mux video and audio

What comes out: the same number of frames with the same timestamps (so the same fps, constant or variable), sides
multiplied by the model's scale (an odd side loses its last row/column: yuv420p needs even sides), the first audio
stream copied bit for bit, or re-encoded (AAC) when the output container cannot hold its codec.
Subtitle and data streams are not carried over; rotation metadata is not applied. Frames larger than the model's
tile size go through in overlapping tiles (StylizeClient.infer_frames), so HD frames cost the server no more memory
than an image request.

The output is written under a temporary name in the destination folder and renamed at the very end: an interrupted
or failed run leaves nothing under the final name.

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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from stylize.errors import InvalidInput, StylizeError

if TYPE_CHECKING:
    from stylize.client import StylizeClient

# Audio codecs each output container takes as they are (anything else is re-encoded).
_COPYABLE_AUDIO = {
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le", "pcm_s16be", "pcm_f32le"},
    "matroska": None,  # Matroska takes every audio codec
}
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers that take H.264

_QUEUE_TIMEOUT = 0.1  # seconds between checks of the stop flag while a stage waits


class VideoError(StylizeError):
    kind = "video"


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
    fps: float  # frame rate of the clip (same in and out)
    size_in: tuple[int, int]  # width, height
    size_out: tuple[int, int]
    audio: str  # "copied (aac)", "re-encoded (pcm_s16le -> aac)" or "none"
    seconds: float  # wall time, open to rename
    requests: int
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
            f"audio {self.audio}; {self.seconds:.1f} s, {self.fps_end_to_end:.2f} frames/s end to end; "
            f"per-frame request latency p50 {self._pct(self.infer_ms, 50):.0f} ms p95 {self._pct(self.infer_ms, 95):.0f} ms, "
            f"decode-to-encode p50 {self._pct(self.latency_ms, 50):.0f} ms; {self.requests} requests ({self.model})"
        )
        if self.retries:
            text += f"; {self.retries} attempts retried after the server was unavailable"
        return text


@dataclass
class _Frame:
    index: int
    array: np.ndarray
    pts: int | None
    time_base: Fraction | None
    decoded_at: float


@dataclass
class _Audio:
    payload: Any  # a packet to copy or a decoded frame to re-encode


class _Stop(Exception):
    """Another stage failed or the run was interrupted."""


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=_QUEUE_TIMEOUT)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=_QUEUE_TIMEOUT)
        except queue.Empty:
            continue


def _import_av():
    try:
        import av
    except ImportError as e:
        raise ImportError("video needs PyAV: pip install 'stylize[video]'") from e
    return av


def temp_path(dst: Path) -> Path:
    """Hidden temporary name next to dst, keeping the extension (the muxer is chosen from it)."""
    return dst.with_name(f".{dst.stem}.partial-{secrets.token_hex(4)}{dst.suffix}")


def upscale_video(
    client: "StylizeClient",
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    model: str = "animevideo_x2",
    version: int | str | None = None,
    crf: int = 18,
    preset: str = "medium",
    concurrency: int = 4,
    batch: int = 1,
    window_margin: int | None = None,
    progress: bool | None = None,
) -> VideoReport:
    """Run every frame of ``src`` through ``model``'s network and write ``dst`` (H.264, audio kept).

    ``crf``: x264 quality (0 lossless .. 51 worst; 18 is visually lossless), ``preset``: x264 speed/size trade-off.
    ``concurrency``: requests in flight; ``batch``: frames per request (on CPU the network runs one request per
    execution: merged batches measured slower per frame there; a GPU repository's batcher merges them).
    ``window_margin`` (windowed models): context frames dropped on each side of a window, default window // 3.
    ``progress``: tqdm bar on stderr (None: only when stderr is a terminal).
    """
    av = _import_av()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InvalidInput(f"no such video: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise InvalidInput(f"refusing to overwrite the input {src}")
    if dst.suffix.lower() not in VIDEO_SUFFIXES:
        raise InvalidInput(f"cannot write H.264 into {dst.suffix or 'a file without extension'}; "
                           f"use one of {', '.join(VIDEO_SUFFIXES)}")
    if not 0 <= crf <= 51:
        raise InvalidInput(f"crf {crf}; expected 0..51")
    if concurrency < 1 or batch < 1:
        raise ValueError("concurrency and batch must be >= 1")

    raw = client.raw_model(model, version=version)  # fails fast on an unknown model or an unreachable server
    margin = None
    if raw.window:
        margin = raw.window // 3 if window_margin is None else window_margin
        WindowPlanner(raw.window, margin)  # validates the margin
        batch = 1

    t_start = time.monotonic()
    retries_before = client.stats.retries
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as e:
        raise InvalidInput(f"cannot open {src} as a video: {e}") from None
    out = None
    stop = threading.Event()
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="stylize-video")
    try:
        if not inp.streams.video:
            raise InvalidInput(f"{src} has no video stream")
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"  # frame-threaded decoding: the decode thread must keep up with the pool
        audio_in = inp.streams.audio[0] if inp.streams.audio else None
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        w, h = vs.codec_context.width, vs.codec_context.height
        out_w, out_h = w * raw.scale, h * raw.scale
        out_w, out_h = out_w - out_w % 2, out_h - out_h % 2

        try:
            out = av.open(str(tmp), "w")
        except (av.error.FFmpegError, ValueError) as e:
            raise InvalidInput(f"cannot write {dst.suffix or 'this'} files: {e}") from None
        ov = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
        ov.width, ov.height, ov.pix_fmt = out_w, out_h, "yuv420p"
        ov.time_base = vs.time_base
        audio_mode, oa = _add_audio(out, audio_in, av)

        decoded: queue.Queue = queue.Queue(maxsize=2 * concurrency * max(batch, raw.window or 1))
        jobs: queue.Queue = queue.Queue(maxsize=concurrency)
        total = vs.frames or None
        bar = _progress_bar(total, progress, src.name)
        report = VideoReport(src=src, dst=dst, model=model, frames=0, fps=float(rate), size_in=(w, h),
                             size_out=(out_w, out_h), audio=audio_mode, seconds=0.0, requests=0)

        def guarded(fn):
            def run():
                try:
                    fn()
                except _Stop:
                    pass
                except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
                    errors.append(e)
                    stop.set()
            return run

        def decode() -> None:
            index = 0
            streams = [vs] + ([audio_in] if audio_in is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream.index == vs.index:
                    for frame in packet.decode():
                        arr = frame.to_ndarray(format="rgb24")
                        _put(decoded, _Frame(index, arr, frame.pts, frame.time_base, time.monotonic()), stop)
                        index += 1
                elif audio_mode.startswith("copied"):
                    if packet.dts is not None:  # the demuxer's flush packet carries no data
                        _put(decoded, _Audio(packet), stop)
                elif audio_mode.startswith("re-encoded"):
                    for aframe in packet.decode():
                        _put(decoded, _Audio(aframe), stop)
            _put(decoded, None, stop)

        def write() -> None:
            while True:
                item = _get(jobs, stop)
                if item is None:
                    break
                if isinstance(item, _Audio):
                    _write_audio(out, oa, item.payload, audio_mode)
                    continue
                future, frames, keep = item
                seconds, result = future.result()
                report.requests += 1
                outs = result[keep] if keep is not None else result
                if len(outs) != len(frames):
                    raise VideoError(f"{model} returned {len(outs)} frames for {len(frames)}")
                for f, arr in zip(frames, outs):
                    if arr.shape[0] < out_h or arr.shape[1] < out_w:
                        raise VideoError(f"{model} returned {arr.shape[1]}x{arr.shape[0]}, expected {out_w}x{out_h}")
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:out_h, :out_w]), format="rgb24")
                    vf.pts = f.pts if f.pts is not None else f.index
                    vf.time_base = f.time_base if f.time_base is not None else vs.time_base
                    for p in ov.encode(vf):
                        out.mux(p)
                    report.frames += 1
                    report.infer_ms.append(seconds * 1000)
                    report.latency_ms.append((time.monotonic() - f.decoded_at) * 1000)
                    if bar is not None:
                        bar.update(1)
            for p in ov.encode(None):
                out.mux(p)
            if audio_mode.startswith("re-encoded"):
                for p in oa.encode(None):
                    out.mux(p)

        def timed_infer(frames: np.ndarray) -> tuple[float, np.ndarray]:
            t0 = time.monotonic()
            result = client.infer_frames(frames, model, version=version)
            return time.monotonic() - t0, result

        for fn, name in ((decode, "stylize-decode"), (write, "stylize-encode")):
            t = threading.Thread(target=guarded(fn), name=name, daemon=True)
            t.start()
            threads.append(t)

        try:
            _schedule(decoded, jobs, stop, pool, timed_infer, raw.window, margin, batch)
        except _Stop:
            pass
        for t in threads:
            while t.is_alive():
                t.join(timeout=_QUEUE_TIMEOUT)
        if bar is not None:
            bar.close()
        if errors:
            if isinstance(errors[0], av.error.FFmpegError):  # a corrupt stream mid-file, an encoder refusing a frame
                raise VideoError(f"{src}: {errors[0]}") from None
            raise errors[0]
        out.close()
        out = None
        os.replace(tmp, dst)
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
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - best effort on an already failed run; the file is deleted anyway
                pass
        inp.close()
        tmp.unlink(missing_ok=True)


def _schedule(decoded: queue.Queue, jobs: queue.Queue, stop: threading.Event, pool: ThreadPoolExecutor,
              infer, window: int | None, margin: int | None, batch: int) -> None:
    """Main-thread stage: frames -> requests in flight, in output order."""
    if window:
        planner = WindowPlanner(window, margin or 0)
        buf: dict[int, _Frame] = {}
        seen = 0
        eof = False
        while not planner.done:
            item = _get(decoded, stop)
            if item is None:
                eof = True
            elif isinstance(item, _Audio):
                _put(jobs, item, stop)
                continue
            else:
                buf[item.index] = item
                seen += 1
            for win in planner.feed(seen, eof=eof):
                idx = window_indices(win.start, window, seen)
                stack = np.stack([buf[i].array for i in idx])
                kept = [buf[i] for i in range(win.keep_from, win.keep_to)]
                keep = slice(win.keep_from - win.start, win.keep_to - win.start)
                _put(jobs, (pool.submit(infer, stack), kept, keep), stop)
            for i in [i for i in buf if i < planner.oldest_needed(seen)]:
                del buf[i]
            if eof:
                break
    else:
        group: list[_Frame] = []
        while True:
            item = _get(decoded, stop)
            if isinstance(item, _Audio):
                _put(jobs, item, stop)
                continue
            if item is not None:
                group.append(item)
            if group and (item is None or len(group) >= batch):
                stack = np.stack([f.array for f in group])
                _put(jobs, (pool.submit(infer, stack), group, None), stop)
                group = []
            if item is None:
                break
    _put(jobs, None, stop)


def _add_audio(out, audio_in, av) -> tuple[str, Any]:
    if audio_in is None:
        return "none", None
    codec = audio_in.codec_context.name
    fmt = out.format.name.split(",")[0]
    allowed = _COPYABLE_AUDIO.get(fmt, set())
    if allowed is None or codec in allowed:
        return f"copied ({codec})", out.add_stream_from_template(audio_in)
    target = "aac"
    channels = len(audio_in.codec_context.layout.channels)
    # unnamed layouts ("1 channels", seen on PCM in Matroska) make the AAC encoder refuse to open
    layout = {1: "mono", 2: "stereo"}.get(channels, audio_in.codec_context.layout.name)
    oa = out.add_stream(target, rate=audio_in.codec_context.sample_rate, layout=layout)
    return f"re-encoded ({codec} -> {oa.codec_context.name})", oa


def _write_audio(out, oa, payload, mode: str) -> None:
    if mode.startswith("copied"):
        payload.stream = oa
        out.mux(payload)
    else:
        payload.pts = None  # let the encoder count samples: decoded frames may carry gaps the encoder rejects
        for p in oa.encode(payload):
            out.mux(p)


def _progress_bar(total: int | None, progress: bool | None, name: str):
    if progress is False:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=name, disable=None if progress is None else False, leave=True)


__all__ = ["VIDEO_SUFFIXES", "upscale_video", "VideoReport", "VideoError", "Window", "WindowPlanner", "plan_windows", "window_indices",
           "temp_path"]
