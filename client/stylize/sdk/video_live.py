"""Live video: frames through the network as they arrive, written as soon as they are ready (`stylize video --live`).

Input is anything FFmpeg reads while it is being written: a FIFO or a pipe (``-`` is stdin), a network stream
(udp://, rtsp://, srt://, http://), a device, or a file still growing (``follow``: read past its current end until
no new data came for that many seconds). Output is a stream that can be read while being written: MPEG-TS (``.ts``,
and what a FIFO, a pipe or ``-`` (stdout) get), fragmented MP4 (``.mp4``/``.mov``: one fragment per frame) or live
Matroska (``.mkv``); every packet is flushed to it when muxed.

The stages are stylize.sdk.video's: a decode thread, the same scheduler (stylize.sdk.video._schedule: single frames,
batches or overlapping windows for BasicVSR) with ``concurrency`` requests in flight, and an encode thread that
takes results in order. Differences from a file run: no segments, no resume, no remux (video only, 8 bits, H.264
or H.265 with the encoder's zero-latency tuning, so no frame waits in a look-ahead), and a bounded input queue with
a stated policy when the server is slower than the input:

    block   the decode thread waits for room: nothing is lost, the input is back-pressured (a pipe's writer blocks;
            a network source's socket buffer overflows, the OS's loss, not ours)
    drop    a frame decoded while the queue is full is dropped (the newest: the frames already queued keep their
            order and every frame that comes out is complete); the report counts the drops

Frames held at any time: at most ``queue`` decoded frames, plus ``concurrency`` requests of ``batch`` frames (or
one window) in flight and their frames awaiting encoding, plus a window's context; never more, whatever the input's
length.

The report (LiveReport; JSON with ``report_path``, a plot with ``plot_path``) holds each frame's end-to-end latency,
decoded -> its packet muxed and flushed, with p50 / p95 / max; the output frame rate; and each stage's busy time
(decode, network, encode) with the intervals, which show the stages overlapping.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from stylize.contract.descriptors import DEFAULT_VIDEO_MODEL
from stylize.contract.errors import InvalidInput
from stylize.sdk.video import (
    QUEUE_TIMEOUT,
    WINDOW_TILE,
    WINDOW_TILE_OVERLAP,
    Frame,
    FrameClient,
    Stop,
    WindowPlanner,
    import_av,
    queue_get,
    queue_put,
    schedule,
    tile_window,
)
from stylize.sdk.video_container import CODECS, PRESETS, Picture, VideoError, picture_of_frame

if TYPE_CHECKING:
    import argparse

    from av import Packet, VideoFrame
    from av.container import InputContainer

POLICIES = ("block", "drop")
LIVE_CODECS = ("h264", "h265")
DEFAULT_QUEUE = 8  # decoded frames waiting for the network
# Container per output suffix, with the options that make every packet readable as soon as it is written
_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    ".ts": ("mpegts", {}),
    ".m2ts": ("mpegts", {}),
    ".mp4": ("mp4", {"movflags": "empty_moov+default_base_moof+frag_every_frame"}),
    ".mov": ("mov", {"movflags": "empty_moov+default_base_moof+frag_every_frame"}),
    ".mkv": ("matroska", {"live": "1"}),
}
# Probe only what it takes to find the stream: a live input's first frame must not wait for 5 s of analysis
_INPUT_OPTIONS = {"probesize": "32768", "analyzeduration": "200000"}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (overlapping requests of one stage counted once)."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _concurrent_seconds(stages: list[list[tuple[float, float]]]) -> float:
    """Time during which at least two of the stages (each a list of disjoint intervals) were busy at once."""
    events = sorted([(a, 1) for st in stages for a, _ in st] + [(b, -1) for st in stages for _, b in st])
    busy, last, total = 0, 0.0, 0.0
    for t, d in events:
        if busy >= 2:
            total += t - last
        busy += d
        last = t
    return total


@dataclass
class LiveReport:
    src: str
    dst: str
    model: str
    policy: str
    queue: int
    concurrency: int
    fps_in: float  # the stream's nominal frame rate
    size_in: tuple[int, int] = (0, 0)
    size_out: tuple[int, int] = (0, 0)
    frames_in: int = 0  # decoded
    frames_out: int = 0  # written
    dropped: int = 0  # by the drop policy
    requests: int = 0
    queue_high_water: int = 0  # most decoded frames waiting at once
    first_output_s: float | None = None  # first packet written, seconds after the start
    input_end_s: float | None = None  # end of input seen, seconds after the start
    seconds: float = 0.0  # start to the last packet
    latency_ms: list[float] = field(default_factory=list)  # per written frame, in output order: decoded -> written
    frame_index: list[int] = field(default_factory=list)  # per written frame: its place among all decoded frames
    compute_ms: list[float] = field(default_factory=list)  # per request: its duration, client side
    frames_per_request: list[int] = field(default_factory=list)  # frames each request contributed
    intervals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # busy periods per stage (s)

    @property
    def fps_out(self) -> float:
        """Written frames per second, first decoded frame to last written packet."""
        starts = self.intervals.get("decode") or [(0.0, 0.0)]
        span = self.seconds - starts[0][0]
        return self.frames_out / span if span > 0 else 0.0

    @property
    def frame_interval_ms(self) -> float:
        return 1000.0 / self.fps_in if self.fps_in else 0.0

    @property
    def compute_per_frame_ms(self) -> float:
        """One frame's compute: the time some request was in flight, per frame written (requests in flight together
        counted once, so queueing at a server busy with the others' frames is not counted twice)."""
        n = sum(self.frames_per_request)
        return 1000 * _union_seconds(self.intervals.get("network", [])) / n if n else 0.0

    @property
    def target_ms(self) -> float:
        """Issue 17's target: two frame intervals plus one frame's compute time."""
        return 2 * self.frame_interval_ms + self.compute_per_frame_ms

    def stages(self) -> dict[str, dict[str, float]]:
        span = self.seconds - (self.intervals.get("decode") or [(0.0, 0.0)])[0][0]
        out = {}
        for name in ("decode", "network", "encode"):
            busy = _union_seconds(self.intervals.get(name, []))
            out[name] = {"busy_s": round(busy, 4), "busy_fraction": round(busy / span, 4) if span > 0 else 0.0}
        total = sum(v["busy_s"] for v in out.values())
        out["overlap"] = {
            "sum_busy_over_wall": round(total / span, 3) if span > 0 else 0.0,
            "two_stages_busy_s": round(
                _concurrent_seconds([_merged(self.intervals.get(n, [])) for n in ("decode", "network", "encode")]), 4
            ),
        }
        return out

    def figures(self) -> dict[str, Any]:
        lat = self.latency_ms
        return {
            "latency_ms": {
                "p50": round(_pct(lat, 50), 2),
                "p95": round(_pct(lat, 95), 2),
                "max": round(max(lat), 2) if lat else 0.0,
                "mean": round(float(np.mean(lat)), 2) if lat else 0.0,
            },
            "fps_out": round(self.fps_out, 3),
            "fps_in": round(self.fps_in, 3),
            "frame_interval_ms": round(self.frame_interval_ms, 2),
            "compute_per_frame_ms": round(self.compute_per_frame_ms, 2),
            "request_ms": {"p50": round(_pct(self.compute_ms, 50), 2), "p95": round(_pct(self.compute_ms, 95), 2)},
            "target_ms": round(self.target_ms, 2),
            "p95_within_target": bool(lat) and _pct(lat, 95) <= self.target_ms,
        }

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = "stylize-live/1"
        d["figures"] = self.figures()
        d["stages"] = self.stages()
        return d

    def summary(self) -> str:
        f = self.figures()
        lat = f["latency_ms"]
        text = (
            f"{self.dst}: live {self.frames_out} frames written of {self.frames_in} decoded "
            f"({self.dropped} dropped, policy {self.policy}), {self.size_in[0]}x{self.size_in[1]} -> "
            f"{self.size_out[0]}x{self.size_out[1]}; {f['fps_out']:.2f} frames/s out (input {self.fps_in:g}); "
            f"latency decoded -> written p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms "
            f"(target {f['target_ms']:.0f} ms: 2 frame intervals + one frame's compute); "
            f"{self.requests} requests ({self.model})"
        )
        st = self.stages()
        text += "; busy " + ", ".join(f"{k} {st[k]['busy_fraction']:.0%}" for k in ("decode", "network", "encode"))
        return text


def _open_input(
    av: ModuleType, src: str, input_format: str | None, follow: float | None, options: dict[str, str] | None
) -> "InputContainer":
    opts = dict(_INPUT_OPTIONS)
    url = "pipe:0" if src == "-" else src
    if follow:
        if "://" in src or src == "-":
            raise InvalidInput("follow reads a growing file: give a file path")
        url = f"file:{os.path.abspath(src)}"
        # read past the end as the file grows; a read waiting longer than this for new data ends the input
        opts.update(follow="1", rw_timeout=str(int(follow * 1e6)))
    opts.update(options or {})
    try:
        container: InputContainer = av.open(url, format=input_format, options=opts, timeout=None)
    except (av.error.FFmpegError, OSError) as e:
        raise InvalidInput(f"cannot open {src} as a video: {e}") from None
    return container


def _output_format(dst: str) -> tuple[str, dict[str, str]]:
    if dst == "-":
        return _FORMATS[".ts"]
    p = Path(dst)
    suffix = p.suffix.lower()
    if suffix in _FORMATS:
        return _FORMATS[suffix]
    try:
        if stat.S_ISFIFO(os.stat(p).st_mode) and not suffix:
            return _FORMATS[".ts"]
    except OSError:
        pass
    raise InvalidInput(f"live output {dst}: use .ts (MPEG-TS), .mp4/.mov (fragmented), .mkv, a FIFO or - (stdout)")


def stream_video(
    client: FrameClient,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    model: str = DEFAULT_VIDEO_MODEL,
    version: int | str | None = None,
    codec: str = "h264",
    crf: int | None = None,
    preset: str = "veryfast",
    concurrency: int = 2,
    batch: int = 1,
    window_margin: int | None = None,
    tile: int | None = None,
    policy: str = "block",
    queue_size: int = DEFAULT_QUEUE,
    input_format: str | None = None,
    input_options: dict[str, str] | None = None,
    follow: float | None = None,
    gop_seconds: float = 2.0,
    report_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
) -> LiveReport:
    """Run ``src`` through ``model`` as it arrives and write each frame to ``dst`` as soon as it is ready.

    ``src``: a path (a FIFO, a file; ``follow`` seconds: a growing file), ``-`` (stdin) or any URL FFmpeg reads;
    ``input_format`` forces the demuxer (e.g. ``mpegts``), ``input_options`` are FFmpeg's (``{"listen": "1"}``).
    ``dst``: ``.ts`` / ``.mp4`` / ``.mov`` / ``.mkv``, a FIFO (MPEG-TS) or ``-`` (stdout, MPEG-TS).
    ``policy``: ``block`` or ``drop`` when ``queue_size`` decoded frames already wait (module docstring).
    ``gop_seconds``: keyframe interval (where a reader joining the stream can start).
    """
    av = import_av()
    src, dst = os.fspath(src), os.fspath(dst)
    if policy not in POLICIES:
        raise InvalidInput(f"policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if codec not in LIVE_CODECS:
        raise InvalidInput(f"live mode writes {' or '.join(LIVE_CODECS)} (zero-latency encoders), not {codec}")
    spec = CODECS[codec]
    crf = spec.crf_default if crf is None else crf
    if not 0 <= crf <= spec.crf_max:
        raise InvalidInput(f"crf {crf}; expected 0..{spec.crf_max} for {spec.title}")
    if preset not in PRESETS:
        raise InvalidInput(f"preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if concurrency < 1 or batch < 1 or queue_size < 1:
        raise ValueError("concurrency, batch and queue_size must be >= 1")
    fmt, mux_options = _output_format(dst)
    if src != "-" and "://" not in src and not follow and not os.path.exists(src):
        raise InvalidInput(f"no such input: {src}")

    raw = client.raw_model(model, version=version)
    margin = None
    window_tile = 0
    if raw.window:
        margin = raw.window // 3 if window_margin is None else window_margin
        WindowPlanner(raw.window, margin)
        batch = 1
        window_tile = WINDOW_TILE if tile is None else tile
        if window_tile and window_tile <= 2 * WINDOW_TILE_OVERLAP:
            raise InvalidInput(f"tile {window_tile} must be more than twice the overlap ({WINDOW_TILE_OVERLAP})")

    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    inp = _open_input(av, src, input_format, follow, input_options)
    if not inp.streams.video:
        inp.close()
        raise InvalidInput(f"{src} has no video stream")
    vs = inp.streams.video[0]
    vs.thread_type = "SLICE"  # frame threading would hold frames back (one per thread)
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
    time_base = vs.time_base or 1 / Fraction(rate)
    report = LiveReport(
        src=src,
        dst=dst,
        model=model,
        policy=policy,
        queue=queue_size,
        concurrency=concurrency,
        fps_in=float(rate),
        intervals={"decode": [], "network": [], "encode": []},
    )
    decoded: queue.Queue = queue.Queue(maxsize=queue_size)
    jobs: queue.Queue = queue.Queue(maxsize=concurrency)
    stop = threading.Event()
    errors: list[BaseException] = []
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="stylize-live")
    picture_box: list[Picture] = []
    out: dict[str, Any] = {}
    pending: dict[int, Frame] = {}  # pts -> the frame whose packet is not written yet
    ordinals: list[int] = []  # per queued frame (its Frame.index): its place among all decoded frames
    lock = threading.Lock()

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

    def decode() -> None:
        index = 0

        def take(frames: Iterable["VideoFrame"], a: float) -> float:
            """Queue each decoded frame; the decode stage's busy periods exclude waiting for room."""
            nonlocal index
            for frame in frames:
                at = time.monotonic()
                if not picture_box:
                    picture_box.append(picture_of_frame(frame))
                    report.size_in = picture_box[0].upright_size
                picture = picture_box[0]
                if (frame.width, frame.height) != (picture.width, picture.height):
                    raise VideoError(
                        f"the input changed size mid-stream: {picture.width}x{picture.height} -> "
                        f"{frame.width}x{frame.height}"
                    )
                arr, _ = picture.to_rgb(frame)
                report.frames_in += 1
                report.intervals["decode"].append((a, now()))
                item = Frame(index, arr, None, frame.pts, frame.time_base, at)
                ordinals.append(report.frames_in - 1)
                if policy == "drop":
                    try:
                        decoded.put_nowait(item)
                    except queue.Full:
                        report.dropped += 1
                        ordinals.pop()
                        a = now()
                        continue
                else:
                    queue_put(decoded, item, stop)
                report.queue_high_water = max(report.queue_high_water, decoded.qsize())
                index += 1
                a = now()
            return a

        packets = inp.demux(vs)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                # a growing file that stopped growing for `follow` seconds: FFmpeg's file protocol gives up with EIO
                if follow and (
                    getattr(e, "errno", None) in (errno.EIO, errno.ETIMEDOUT)
                    or isinstance(e, (av.error.TimeoutError, av.error.ExitError))
                ):
                    take(vs.codec_context.decode(None), now())  # the frames the decoder still holds
                    break
                raise
            take(packet.decode(), now())
        report.input_end_s = now()
        queue_put(decoded, None, stop)

    def open_output(h_out: int, w_out: int) -> None:
        o = av.open(
            sys.stdout.buffer if dst == "-" else dst,
            "w",
            format=fmt,
            container_options={**mux_options, "flush_packets": "1"},
        )
        options = spec.options(crf, preset)
        options["tune"] = "zerolatency"
        s = o.add_stream(spec.encoder, rate=rate, options=options)
        s.width, s.height, s.pix_fmt = w_out, h_out, "yuv420p"
        s.time_base = time_base
        s.codec_context.time_base = time_base
        s.codec_context.gop_size = max(1, round(float(rate) * gop_seconds))
        picture_box[0].tag(s.codec_context)
        out.update(container=o, stream=s)

    def mux(packets: Iterable["Packet"]) -> None:
        for p in packets:
            pts = p.pts
            out["container"].mux(p)
            t = time.monotonic()
            if report.first_output_s is None:
                report.first_output_s = t - t0
            f = pending.pop(pts, None) if pts is not None else None  # pending's keys are the frames' pts
            if f is not None:
                report.latency_ms.append((t - f.decoded_at) * 1000)
                report.frame_index.append(ordinals[f.index])
                report.frames_out += 1

    def write() -> None:
        last_pts = None
        while True:
            item = queue_get(jobs, stop)
            if item is None:
                break
            future, frames, keep = item
            seconds, result = future.result()
            report.requests += 1
            report.compute_ms.append(seconds * 1000)
            report.frames_per_request.append(len(frames))
            outs = result[keep] if keep is not None else result
            if len(outs) != len(frames):
                raise VideoError(f"{model} returned {len(outs)} frames for {len(frames)}")
            for f, arr in zip(frames, outs):
                a = now()
                w, h = report.size_in
                h_out, w_out = (h * raw.scale) // 2 * 2, (w * raw.scale) // 2 * 2
                if not out:
                    report.size_out = (w_out, h_out)
                    open_output(h_out, w_out)
                vf = picture_box[0].frame_from(av, arr[:h_out, :w_out], None, raw.scale, "yuv420p")
                vf.time_base = f.time_base if f.time_base is not None else time_base
                pts = f.pts if f.pts is not None else round(f.index / rate / vf.time_base)
                if last_pts is not None and pts <= last_pts:  # a source without usable timestamps
                    pts = last_pts + 1
                vf.pts = last_pts = pts
                pending[pts] = f
                mux(out["stream"].encode(vf))
                report.intervals["encode"].append((a, now()))
        if out:
            a = now()
            mux(out["stream"].encode(None))
            report.intervals["encode"].append((a, now()))

    def timed_infer(frames: np.ndarray) -> tuple[float, np.ndarray]:
        a = time.monotonic()
        if window_tile:
            result = tile_window(
                client, frames, model, version=version, scale=raw.scale, multiple=raw.size_multiple, tile=window_tile
            )
        else:
            result = client.infer_frames(frames, model, version=version)
        b = time.monotonic()
        with lock:
            report.intervals["network"].append((a - t0, b - t0))
        return b - a, result

    threads = [
        threading.Thread(target=guarded(fn), name=name, daemon=True)
        for fn, name in ((decode, "stylize-live-decode"), (write, "stylize-live-encode"))
    ]
    for t in threads:
        t.start()
    try:
        try:
            schedule(decoded, jobs, stop, pool, timed_infer, raw.window, margin, batch)
        except Stop:
            pass
        for t in threads:
            while t.is_alive():
                t.join(timeout=QUEUE_TIMEOUT)
    except BaseException:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if out:
            try:
                out["container"].close()
            except Exception:  # noqa: BLE001 - a reader that went away (broken pipe): nothing left to write to
                pass
        inp.close()
    if errors:
        if isinstance(errors[0], av.error.FFmpegError):
            raise VideoError(f"{src}: {errors[0]}") from None
        raise errors[0]
    if not report.frames_in:
        raise InvalidInput(f"{src}: no video frame arrived")
    report.seconds = now()
    if report_path is not None:
        Path(report_path).write_text(json.dumps(report.to_json(), indent=1))
    if plot_path is not None:
        plot_live(report, Path(plot_path))
    return report


def plot_live(report: LiveReport, path: Path) -> Path:
    """Two panels: each frame's latency (with p50, p95 and the target), and the stages' busy periods over time."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the live plot needs matplotlib: pip install 'stylize[video]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = report.figures()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), gridspec_kw={"height_ratios": [3, 2]})
    lat = report.latency_ms
    ax1.plot(range(len(lat)), lat, ".-", lw=0.8, ms=3, color="tab:blue", label="frame: decoded -> written")
    for value, style, name in ((f["latency_ms"]["p50"], "--", "p50"), (f["latency_ms"]["p95"], ":", "p95")):
        ax1.axhline(value, ls=style, color="tab:blue", lw=1, label=f"{name} {value:.0f} ms")
    ax1.axhline(
        f["target_ms"],
        color="tab:red",
        lw=1,
        label=f"target {f['target_ms']:.0f} ms (2 frame intervals + 1 frame's compute)",
    )
    ax1.set_xlabel("output frame")
    ax1.set_ylabel("latency (ms)")
    ax1.set_ylim(bottom=0, top=max([f["target_ms"], *lat]) * 1.45 if lat else None)
    ax1.legend(fontsize=8, loc="upper center", ncol=2)
    ax1.set_title(
        f"{report.model}, live: {report.size_in[0]}x{report.size_in[1]} -> "
        f"{report.size_out[0]}x{report.size_out[1]}, {report.frames_out} frames "
        f"({report.dropped} dropped, {report.policy}), {f['fps_out']:.1f} fps out / {report.fps_in:g} in",
        fontsize=10,
    )
    ax1.grid(alpha=0.3)
    stages = report.stages()
    colours = {"decode": "tab:green", "network": "tab:orange", "encode": "tab:purple"}
    for row, name in enumerate(("decode", "network", "encode")):
        bars = [(a, max(b - a, 1e-4)) for a, b in report.intervals.get(name, [])]
        ax2.broken_barh(bars, (row - 0.35, 0.7), color=colours[name])
    ax2.set_yticks(
        range(3), [f"{n}\n{stages[n]['busy_fraction']:.0%} busy" for n in ("decode", "network", "encode")], fontsize=8
    )
    ax2.invert_yaxis()
    if report.first_output_s is not None:
        ax2.axvline(
            report.first_output_s, color="k", lw=1, ls="--", label=f"first packet written {report.first_output_s:.2f} s"
        )
    if report.input_end_s is not None:
        ax2.axvline(report.input_end_s, color="k", lw=1, label=f"input ended {report.input_end_s:.2f} s")
    ax2.set_xlabel("seconds since start")
    ax2.set_title("busy periods per stage (overlapping = pipelined)", fontsize=10)
    ax2.legend(fontsize=8, loc="lower right")
    ax2.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_live_args(p: "argparse.ArgumentParser") -> None:
    """The `stylize video --live` options (registered by stylize.commands.video)."""
    g = p.add_argument_group("live (--live)")
    g.add_argument(
        "--live",
        action="store_true",
        help="read SRC as it arrives (FIFO, pipe, - for stdin, a URL; --follow for a growing file) and "
        "write each frame when ready to DST (.ts, fragmented .mp4, .mkv, a FIFO, - for stdout)",
    )
    g.add_argument(
        "--on-full",
        choices=POLICIES,
        default="block",
        help="when --queue decoded frames already wait: block the input or drop the new frame (default %(default)s)",
    )
    g.add_argument(
        "--queue", type=int, default=DEFAULT_QUEUE, help="decoded frames that may wait (default %(default)s)"
    )
    g.add_argument(
        "--follow",
        type=float,
        default=None,
        metavar="SECONDS",
        help="SRC is a file still being written: read on until it has not grown for SECONDS",
    )
    g.add_argument("--input-format", default=None, help="force FFmpeg's demuxer for SRC (e.g. mpegts, h264)")
    g.add_argument("--report", type=Path, default=None, metavar="JSON", help="write the latency report here")
    g.add_argument("--plot", type=Path, default=None, metavar="PNG", help="plot latency and stage activity here")


def run_live(args: "argparse.Namespace", client: FrameClient) -> LiveReport:
    return stream_video(
        client,
        args.src,
        args.output,
        model=args.model,
        version=args.model_version,
        codec=args.codec,
        crf=args.crf,
        preset=args.preset or "veryfast",
        concurrency=args.concurrency,
        batch=args.batch,
        window_margin=args.window_margin,
        tile=args.tile,
        policy=args.on_full,
        queue_size=args.queue,
        input_format=args.input_format,
        follow=args.follow,
        report_path=args.report,
        plot_path=args.plot,
    )


__all__ = ["LiveReport", "POLICIES", "stream_video", "plot_live", "add_live_args", "run_live"]
