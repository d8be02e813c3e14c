"""Everything of a video besides the picture the network makes: output codecs, colour, rotation, resume, the container.

How `stylize video` writes its output (stylize.sdk.video runs the network):

    segments     the network's frames are encoded video-only by PyAV, in segments of N frames, each by a fresh
                 encoder starting on a keyframe, into a work folder next to the destination (NUT files: they keep
                 the source's time base, so every frame keeps its own timestamp, variable frame rate included).
                 A segment is renamed to its final name only once it is complete.
    resume       a later run with the same job (source file, model, codec options, segment length) finds the
                 complete segments and starts at the first missing one. Each segment is a function of its own
                 frames only (fresh encoder, deterministic encoders), so the result equals an uninterrupted run.
    join         the segments are joined packet for packet into one MP4 video stream (their timestamps are already
                 the source's; decode timestamps and durations are recomputed over the whole stream).
    remux        the ffmpeg binary muxes that stream with every other stream of the source (`-map`): every audio
                 track (copied, or AAC where the container cannot hold the codec), subtitles (copied, or converted
                 between SubRip and mov_text where the container needs it), Matroska attachments, chapters, the
                 container's metadata and each stream's metadata and disposition. ffmpeg does this step because it
                 converts subtitle codecs and carries attachments; PyAV does not.

Rotation (display matrix) is applied to the pixels before the network, so the output is upright and carries none.
Colour tags (primaries, transfer, matrix, range) of the source are used for both RGB conversions and written on the
output. Input with more than 8 bits per sample is read as 16-bit RGB and encoded at 10 bits: the network sees its
8-bit rounding, and in flat areas (where the 8-bit staircase of a gradient would show as bands) the 10-bit source,
upscaled, replaces the network's output (flat_areas_from_source).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from stylize.contract.errors import InvalidInput, StylizeError

if TYPE_CHECKING:  # PyAV is the video extra's: imported where it is used (the ``av`` arguments: the module)
    from av import VideoCodecContext, VideoFrame
    from av.container import InputContainer


class VideoError(StylizeError):
    kind = "video"


@dataclass(frozen=True)
class Codec:
    """An output codec: its PyAV encoder, the CRF range and default, the pixel formats by bit depth."""

    name: str
    encoder: str
    title: str
    crf_max: int
    crf_default: int
    pix_fmts: dict[int, str]  # bit depth -> pixel format
    containers: frozenset[str]  # output suffixes that take it

    def options(self, crf: int, preset: str) -> dict[str, str]:
        if self.encoder == "libx264":
            return {"crf": str(crf), "preset": preset}
        if self.encoder == "libx265":
            return {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
        if self.encoder == "libvpx-vp9":  # constant quality (b=0); x264 preset names mapped onto cpu-used
            return {
                "crf": str(crf),
                "b": "0",
                "row-mt": "1",
                "deadline": "good",
                "cpu-used": str(_VP9_CPU_USED[preset]),
            }
        if self.encoder == "libsvtav1":
            return {"crf": str(crf), "preset": str(_SVT_PRESET[preset])}
        raise AssertionError(self.encoder)


PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_VP9_CPU_USED = dict(zip(PRESETS, (8, 7, 6, 5, 4, 3, 2, 1, 0)))
_SVT_PRESET = dict(zip(PRESETS, (12, 11, 10, 9, 8, 6, 4, 3, 2)))
_MP4 = frozenset({".mp4", ".m4v", ".mov", ".mkv"})
CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("h264", "libx264", "H.264", 51, 18, {8: "yuv420p", 10: "yuv420p10le"}, _MP4),
        Codec("h265", "libx265", "H.265", 51, 20, {8: "yuv420p", 10: "yuv420p10le"}, _MP4),
        Codec(
            "vp9", "libvpx-vp9", "VP9", 63, 31, {8: "yuv420p", 10: "yuv420p10le"}, frozenset({".mp4", ".mkv", ".webm"})
        ),
        Codec(
            "av1", "libsvtav1", "AV1", 63, 30, {8: "yuv420p", 10: "yuv420p10le"}, frozenset({".mp4", ".mkv", ".webm"})
        ),
    )
}


def output_codec(av: ModuleType, codec: str, bit_depth: int, suffix: str) -> tuple[Codec, str]:
    """The codec and pixel format to encode, refused with the reason when this PyAV or the container lacks them."""
    if codec not in CODECS:
        raise InvalidInput(f"codec {codec!r}; expected one of {', '.join(CODECS)}")
    c = CODECS[codec]
    if suffix.lower() not in c.containers:
        raise InvalidInput(
            f"cannot write {c.title} into {suffix or 'a file without extension'}; "
            f"use one of {', '.join(sorted(c.containers))}"
        )
    if bit_depth not in c.pix_fmts:
        raise InvalidInput(f"bit depth {bit_depth}; {c.title} is written with {' or '.join(map(str, c.pix_fmts))}")
    try:
        formats = {f.name for f in (av.codec.Codec(c.encoder, "w").video_formats or [])}
    except Exception:  # noqa: BLE001 - av raises its own UnknownCodecError; the message below says what to do
        raise InvalidInput(f"this PyAV has no {c.encoder} encoder ({c.title})") from None
    pix_fmt = c.pix_fmts[bit_depth]
    if formats and pix_fmt not in formats:
        raise InvalidInput(f"this PyAV's {c.encoder} cannot write {bit_depth}-bit ({pix_fmt})")
    return c, pix_fmt


# ---- the source's picture: rotation, colour, bit depth ---------------------------------------------------------

# AVColorSpace values swscale converts with (others fall back to its default, BT.601)
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


@dataclass(frozen=True)
class Picture:
    """What the first decoded frame says about the picture (constant over a stream)."""

    width: int  # as stored
    height: int
    rotation: int  # display matrix, degrees counterclockwise, a multiple of 90
    bit_depth: int  # bits per sample of the decoded format
    colorspace: int  # AVColorSpace (matrix)
    color_range: int  # AVColorRange (1 limited, 2 full, 0 unspecified)
    color_primaries: int
    color_trc: int

    @property
    def quarter_turns(self) -> int:
        return (self.rotation // 90) % 4

    @property
    def upright_size(self) -> tuple[int, int]:
        return (self.height, self.width) if self.quarter_turns % 2 else (self.width, self.height)

    @property
    def matrix(self) -> int | None:
        """The matrix for swscale (None: its default, as ffmpeg does for untagged video)."""
        return _SWS_MATRIX.get(self.colorspace)

    def to_rgb(self, frame: "VideoFrame") -> tuple[np.ndarray, np.ndarray | None]:
        """Upright uint8 RGB for the network, and for high-bit-depth input the upright 16-bit RGB as well."""
        kw: dict[str, Any] = {"src_colorspace": self.matrix, "src_color_range": self.color_range or None}
        if self.bit_depth > 8:
            rgb16 = self.upright(frame.to_ndarray(format="rgb48le", **kw))
            return ((rgb16.astype(np.uint32) + 128) // 257).astype(np.uint8), rgb16
        return self.upright(frame.to_ndarray(format="rgb24", **kw)), None

    def upright(self, arr: np.ndarray) -> np.ndarray:
        k = self.quarter_turns
        return np.ascontiguousarray(np.rot90(arr, k)) if k else arr

    def frame_from(
        self, av: ModuleType, rgb: np.ndarray, source16: np.ndarray | None, scale: int, pix_fmt: str
    ) -> "VideoFrame":
        """The output picture as a frame in the encoder's format, with the source's colour tags.

        ``source16`` (high-bit-depth input, scale > 1): see flat_areas_from_source. A uint16 ``rgb`` is the final
        16-bit picture already (video.outscaled).
        """
        vf: VideoFrame
        if rgb.dtype == np.uint16:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb48le")
        elif source16 is not None and scale > 1:
            vf = av.VideoFrame.from_ndarray(flat_areas_from_source(rgb, source16, scale), format="rgb48le")
        elif source16 is not None:
            vf = av.VideoFrame.from_ndarray(rgb.astype(np.uint16) * 257, format="rgb48le")
        else:
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        kw: dict[str, Any] = {"dst_colorspace": self.matrix, "dst_color_range": self.color_range or None}
        if self.color_trc:
            kw["dst_color_trc"] = self.color_trc
        if self.color_primaries:
            kw["dst_color_primaries"] = self.color_primaries
        out = vf.reformat(format=pix_fmt, **kw)
        if self.colorspace:
            out.colorspace = self.colorspace
        return out

    def tag(self, codec_context: "VideoCodecContext") -> None:
        """Write the source's colour tags on the encoder (what goes into the bitstream's VUI and the container)."""
        for name in ("colorspace", "color_range", "color_primaries", "color_trc"):
            value = getattr(self, name)
            if value:
                setattr(codec_context, name, value)


FLAT_RANGE = 1.5  # 8-bit levels: a 5x5 neighbourhood of the source spanning at most this is flat (banding shows)


def _window_extreme(a: np.ndarray, radius: int, fn: Callable[..., np.ndarray]) -> np.ndarray:
    """Max or min over a (2r+1)^2 window, separable, edges replicated."""
    win = 2 * radius + 1
    for axis in (0, 1):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (radius, radius)
        a = fn(np.lib.stride_tricks.sliding_window_view(np.pad(a, pad, mode="edge"), win, axis=axis), axis=-1)
    return a


def _box(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (edges replicated): feathers the mask."""
    for axis in (0, 1):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
        n = a.shape[axis]
        hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        a = (hi - lo) / (2 * radius + 1)
    return a


def _upscale_bilinear(a: np.ndarray, scale: int, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize by an integer factor (pixel centres aligned, as image resizers do), float32."""
    out = a.astype(np.float32)
    for axis, n_out in ((0, out_h), (1, out_w)):
        n = out.shape[axis]
        x = np.clip((np.arange(n_out) + 0.5) / scale - 0.5, 0, n - 1)
        i0 = np.floor(x).astype(np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        t = (x - i0).astype(np.float32)
        shape = [1, 1, 1][: out.ndim]
        shape[axis] = n_out
        t = t.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - t) + np.take(out, i1, axis=axis) * t
    return out


def flat_areas_from_source(net: np.ndarray, source16: np.ndarray, scale: int) -> np.ndarray:
    """16-bit output: the network's picture, except in flat areas, where the 10-bit source upscaled is used.

    The network sees 8 bits; a smooth gradient reaches it as a staircase of 1-level steps, which it returns as
    bands (partly smoothed, with its own ripple). Where the source spans at most FLAT_RANGE 8-bit levels over 5x5
    pixels the network has no detail to add, so there the bilinear upscale of the high-bit-depth source is taken,
    blended into the network's picture up to twice that spread and feathered over a few pixels; edges and texture
    keep the network's output. The price: grain weaker than that is smoothed (a cleanup network removes it too).
    """
    h, w = net.shape[:2]
    src = source16.astype(np.float32) / 257  # in 8-bit levels, with the source's precision
    spread = (_window_extreme(src, 2, np.max) - _window_extreme(src, 2, np.min)).max(axis=-1)
    # 1 up to FLAT_RANGE levels, 0 from twice that; a gradient's spread is constant, so is its weight (no ripple)
    flat = np.clip(2 - spread / FLAT_RANGE, 0, 1).astype(np.float32)
    flat = _window_extreme(flat, 2, np.min)  # shrink: the feathering must not reach an edge or its halo
    mask = _box(np.repeat(np.repeat(flat, scale, axis=0), scale, axis=1)[:h, :w], scale)[..., None]
    smooth = _upscale_bilinear(source16, scale, h, w)
    out = net.astype(np.float32) * 257 * (1 - mask) + smooth * mask
    picture: np.ndarray = np.clip(np.rint(out), 0, 65535).astype(np.uint16)  # numpy's ufuncs (rint) return Any
    return picture


def picture_of_frame(frame: "VideoFrame") -> Picture:
    """The Picture of one decoded PyAV frame (rotation to the nearest quarter turn)."""
    rotation = int(round((frame.rotation or 0) / 90.0)) * 90
    depth = max(comp.bits for comp in frame.format.components)
    return Picture(
        frame.width,
        frame.height,
        rotation,
        depth,
        int(frame.colorspace),
        int(frame.color_range),
        int(frame.color_primaries),
        int(frame.color_trc),
    )


def probe_picture(av: ModuleType, path: Path) -> Picture:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frame = next(c.decode(vs), None)
        if frame is None:
            raise InvalidInput(f"{path} has no decodable video frame")
        return picture_of_frame(frame)


# ---- resume: the work folder ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What makes two runs produce the same segments; a work folder of another job is discarded."""

    source: str
    source_size: int
    source_mtime_ns: int
    model: str
    version: str
    codec: str
    pix_fmt: str
    crf: int
    preset: str
    segment_frames: int
    batch: int
    window_margin: int | None
    tile: int = 0  # windowed models: the spatial tile (0: untiled)
    outscale: float | None = None  # output sides / input sides (None: the network's scale)
    fps: str = ""  # the output frame rate as a fraction ("": the source's timestamps)


# Timestamps as they are: by default a muxer shifts a stream whose first dts is negative (B-frame delay), which would
# move every frame of a segment later by that delay
MUX_OPTIONS = {"avoid_negative_ts": "disabled"}


class SegmentStore:
    """Complete segments `seg-000000.nut`... of one job in `.<dst name>.stylize-work/` next to the destination."""

    def __init__(self, dst: Path, job: Job):
        self.dir = self.folder(dst)
        self.job = job

    @staticmethod
    def folder(dst: Path) -> Path:
        return dst.with_name(f".{dst.name}.stylize-work")

    def path(self, k: int) -> Path:
        return self.dir / f"seg-{k:06d}.nut"

    def part(self, k: int) -> Path:
        return self.dir / f"seg-{k:06d}.part.nut"

    def open(self, resume: bool) -> int:
        """Prepare the folder; the number of complete segments to keep (0 unless resuming the same job)."""
        manifest = self.dir / "job.json"
        keep = False
        if self.dir.is_dir() and resume:
            try:
                keep = json.loads(manifest.read_text()) == asdict(self.job)
            except (OSError, ValueError):
                keep = False
        if self.dir.exists() and not keep:
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        for p in self.dir.glob("*.part.nut"):  # a segment a crash left half written
            p.unlink()
        if not keep:
            tmp = self.dir / "job.json.tmp"
            tmp.write_text(json.dumps(asdict(self.job), indent=1))
            os.replace(tmp, manifest)
        done = 0
        while self.path(done).is_file():
            done += 1
        for p in self.dir.glob("seg-*.nut"):  # anything after a gap is not trusted
            if not p.name.endswith(".part.nut") and int(p.stem.split("-")[1]) >= done:
                p.unlink()
        return done

    def finish(self, k: int) -> None:
        os.replace(self.part(k), self.path(k))

    def segments(self) -> list[Path]:
        done = 0
        while self.path(done).is_file():
            done += 1
        return [self.path(k) for k in range(done)]

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def join_segments(av: ModuleType, segments: list[Path], out_path: Path, last_duration: Fraction | None = None) -> int:
    """Concatenate the segments' packets into one MP4 video stream with the source's timestamps; the packet count.

    Decode timestamps are recomputed over the whole stream: each segment came from a fresh encoder whose B-frame
    delay reaches back before its first frame, and NUT stores no dts anyway. With D the largest reorder distance
    seen, packet j decodes at the (j - D)-th smallest presentation time (the first D one frame interval apart
    before it), which is never after its own and strictly increases. Each frame lasts until the next one; the last
    one ``last_duration`` seconds (the source's; else as long as the one before). MP4 keeps all of it (NUT keeps no
    durations: ffmpeg would drop a last frame of unknown length).
    """
    if not segments:
        raise VideoError("no video frames were written")
    pts: list[int] = []
    reorder = 0
    for seg in segments:
        with av.open(str(seg)) as c:
            time_base = c.streams.video[0].time_base
            local = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
        if None in local:
            raise VideoError(f"{seg.name}: a packet without a timestamp")
        order = {v: i for i, v in enumerate(sorted(local))}
        reorder = max([reorder] + [j - order[v] for j, v in enumerate(local)])
        pts += local
    ordered = sorted(pts)
    if len(set(ordered)) != len(ordered):
        raise VideoError("two frames with the same timestamp")
    gap = ordered[1] - ordered[0] if len(ordered) > 1 else 1
    if last_duration:
        last = max(1, round(last_duration / time_base))
    else:
        last = ordered[-1] - ordered[-2] if len(ordered) > 1 else 1
    rank = {v: i for i, v in enumerate(ordered)}

    def dts(j: int) -> int:
        return ordered[j - reorder] if j >= reorder else ordered[0] - (reorder - j) * gap

    def duration(v: int) -> int:
        i = rank[v]
        return ordered[i + 1] - v if i + 1 < len(ordered) else last

    out = av.open(str(out_path), "w", format="mp4", container_options=MUX_OPTIONS)
    j = 0
    try:
        with av.open(str(segments[0])) as first:
            tpl = first.streams.video[0]
            try:
                ov = out.add_stream_from_template(tpl)
            except av.codec.codec.UnknownCodecError:  # the template names its decoder (libdav1d): no such encoder
                ov = out.add_stream(tpl.codec_context.codec.canonical_name)
                ov.width, ov.height = tpl.codec_context.width, tpl.codec_context.height
                ov.pix_fmt = tpl.codec_context.pix_fmt
                ov.codec_context.extradata = tpl.codec_context.extradata
            ov.time_base = tpl.time_base
        for seg in segments:
            with av.open(str(seg)) as c:
                for pkt in c.demux(c.streams.video[0]):
                    if not pkt.size:  # the demuxer's flush packet
                        continue
                    pkt.dts = dts(j)
                    pkt.duration = duration(pkt.pts)
                    pkt.stream = ov
                    out.mux(pkt)
                    j += 1
    finally:
        out.close()
    return j


# ---- the container: ffmpeg muxes the new video with every other stream of the source -----------------------------

# Audio codecs each output container takes as they are (anything else is re-encoded to AAC, or Opus for WebM).
_COPYABLE_AUDIO: dict[str, set[str] | None] = {
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le", "pcm_s16be", "pcm_f32le"},
    "matroska": None,  # Matroska takes every audio codec
    "webm": {"opus", "vorbis"},
}
_TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"}
_SUBTITLES = {
    "mp4": ({"mov_text"}, "mov_text"),
    "mov": ({"mov_text"}, "mov_text"),
    "matroska": (None, "srt"),
    "webm": ({"webvtt"}, "webvtt"),
}
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


@dataclass
class StreamPlan:
    args: list[str]  # ffmpeg arguments after the two inputs, before the output name
    audio: list[str]  # per track: "copied (aac)", "re-encoded (pcm_s16le -> aac)"
    subtitles: list[str]  # per track: "copied (subrip)", "converted (subrip -> mov_text)", "dropped (...)"


def plan_streams(inp: "InputContainer", suffix: str, codec: Codec) -> StreamPlan:
    """ffmpeg -map/-c arguments carrying every audio and subtitle stream of ``inp`` (an open PyAV container) into a
    ``suffix`` file, input 0 being the new video and input 1 the source."""
    fmt = _FORMATS[suffix.lower()]
    args = ["-map", "0:v:0", "-c:v", "copy"]
    if codec.name == "h265" and fmt in ("mp4", "mov"):
        args += ["-tag:v", "hvc1"]  # what QuickTime and browsers play
    # each output stream's metadata (language, title, an attachment's file name) from its source stream; one such
    # mapping turns ffmpeg's default copy off for all, hence one for every stream (the display matrix is no metadata)
    sources = [inp.streams.video[0].index]
    audio, subtitles = [], []
    allowed = _COPYABLE_AUDIO[fmt]
    for i, a in enumerate(inp.streams.audio):
        name = a.codec_context.codec.canonical_name  # the codec, not the decoder (mp3, not mp3float)
        args += ["-map", f"1:{a.index}"]
        sources.append(a.index)
        if allowed is None or name in allowed:
            args += [f"-c:a:{i}", "copy"]
            audio.append(f"copied ({name})")
        else:
            target = "libopus" if fmt == "webm" else "aac"
            args += [f"-c:a:{i}", target]
            audio.append(f"re-encoded ({name} -> {'opus' if fmt == 'webm' else 'aac'})")
    takes, convert_to = _SUBTITLES[fmt]
    j = 0
    for t in inp.streams.subtitles:
        name = t.codec_context.codec.canonical_name  # the codec, not the decoder (mp3, not mp3float)
        if (takes is None and name != "mov_text") or (takes is not None and name in takes):
            args += ["-map", f"1:{t.index}", f"-c:s:{j}", "copy"]
            subtitles.append(f"copied ({name})")
        elif name in _TEXT_SUBTITLES:
            args += ["-map", f"1:{t.index}", f"-c:s:{j}", convert_to]
            subtitles.append(f"converted ({name} -> {convert_to})")
        else:
            subtitles.append(f"dropped ({name}: {suffix} takes text subtitles only)")
            continue
        sources.append(t.index)
        j += 1
    if fmt == "matroska":  # attachments (fonts of ASS subtitles)
        for s in inp.streams:
            if s.type == "attachment":
                args += ["-map", f"1:{s.index}"]
                sources.append(s.index)
        args += ["-c:t", "copy"]
    for out_index, src_index in enumerate(sources):
        args += [f"-map_metadata:s:{out_index}", f"1:s:{src_index}"]
    args += ["-map_metadata", "1", "-map_chapters", "1"]
    return StreamPlan(args, audio, subtitles)


def ffmpeg_exe() -> str:
    """The ffmpeg binary: $STYLIZE_FFMPEG, the one on PATH, or imageio-ffmpeg's."""
    exe = os.environ.get("STYLIZE_FFMPEG") or shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError(
            "stylize video muxes its output with the ffmpeg binary: install ffmpeg (apt-get install "
            "ffmpeg) or pip install imageio-ffmpeg, or set STYLIZE_FFMPEG"
        ) from None
    found: str = imageio_ffmpeg.get_ffmpeg_exe()  # imageio_ffmpeg is untyped
    return found


def remux(video: Path, src: Path, out: Path, plan: StreamPlan) -> None:
    """Mux ``video`` with the source's other streams into ``out``; both keep the source's own timeline (-copyts)."""
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-copyts",
        "-i",
        str(video),
        "-i",
        str(src),
        *plan.args,
        str(out),
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise VideoError(f"ffmpeg could not mux {out.name}: {proc.stderr.strip()[-2000:]}")


__all__ = [
    "MUX_OPTIONS",
    "CODECS",
    "PRESETS",
    "Codec",
    "Job",
    "Picture",
    "picture_of_frame",
    "SegmentStore",
    "StreamPlan",
    "VideoError",
    "join_segments",
    "output_codec",
    "plan_streams",
    "probe_picture",
    "remux",
    "ffmpeg_exe",
]
