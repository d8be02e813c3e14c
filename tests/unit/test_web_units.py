"""The web page's pure parts without a server: content sniffing, the response-cache outcome of a request, the tile
count promised to the page against the count the step's pipeline really makes, job names, the store's bounds."""

import asyncio
import io
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from stylize.contract.descriptors import REGISTRY
from stylize.contract.step import StepConfig
from stylize.engine.pipeline import parse_options, process
from stylize.sdk.info import ModelInfo
from stylize.sdk.request import option_tensors
from stylize.web.catalog import ModelEntry
from stylize.web.images import HIT, MISS, OFF, UNKNOWN, cache_summary, outcome, planned_tiles
from stylize.web.jobs import Busy, Job, JobStore, display_name
from stylize.web.settings import WebSettings
from stylize.web.sniff import image_media_type, sniff

pytestmark = pytest.mark.unit


def _bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


# ---- sniffing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_images_are_known_by_their_bytes(fmt):
    data = _bytes(Image.new("RGB", (8, 8), "red"), fmt)
    assert sniff(data[:64]) == ("image", fmt)


def test_videos_are_known_by_their_bytes_and_everything_else_goes_to_the_server_as_an_image():
    assert sniff(b"\0\0\0\x20ftypisom\0\0\x02\0") == ("video", "MP4")
    assert sniff(b"\0\0\0\x14ftypqt  ") == ("video", "MOV")
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm") == ("video", "WEBM")
    assert sniff(b"RIFF\0\0\0\0AVI LIST") == ("video", "AVI")
    assert sniff(b"\0\0\0\x1cftypavif") == ("image", "HEIF")  # a still in an ISO-BMFF box: the server decides
    assert sniff(b"%PDF-1.7") == ("image", None) and sniff(b"") == ("image", None)
    assert image_media_type(_bytes(Image.new("RGB", (4, 4)), "JPEG")) == "image/jpeg"


# ---- the response cache ----------------------------------------------------------------------------------------


def test_cache_outcome_is_measured_never_guessed():
    assert outcome(1, 0) == HIT and outcome(0, 1) == MISS and outcome(0, 0) == OFF
    assert outcome(1, 1) == UNKNOWN and outcome(2, 0) == UNKNOWN  # another client's request in the same window
    models = ("m_image",)
    assert (
        cache_summary(Counter({HIT: 12}), 12, models)["text"] == "Answered from Triton's response cache (all 12 tiles)"
    )
    assert cache_summary(Counter({HIT: 1}), 1, models)["answered_from_cache"]
    partial = cache_summary(Counter({HIT: 5, MISS: 7}), 12, models)
    assert not partial["answered_from_cache"] and "5 of 12 tiles" in partial["text"]
    assert "cache is off" in cache_summary(Counter({OFF: 1}), 1, models)["text"]
    assert "could not be attributed" in cache_summary(Counter({HIT: 11, UNKNOWN: 1}), 12, models)["text"]
    assert "m_image" in cache_summary(Counter({MISS: 1}), 1, models)["measured_by"]


# ---- the tile count the page promises is the count the step makes ---------------------------------------------


def _entry(model: str, **step) -> ModelEntry:
    desc = REGISTRY[model]
    info = ModelInfo(id=model, task=desc.task, scale=desc.scale, weights="real", license="", versions=(1,), ready=True)
    return ModelEntry(
        info=info,
        image_model=desc.image_model,
        step=StepConfig.from_descriptor(desc, **step),
        options=tuple(o.name for o in desc.options),
    )


@pytest.mark.parametrize(
    "model,size,options,step",
    [
        ("animevideo_x2", (300, 451), {"tile_size": 128}, {}),
        ("animevideo_x2", (300, 451), {}, {}),
        ("animevideo_x2", (97, 61), {"tile_size": 48}, {}),
        ("esrgan_x4", (200, 333), {}, {}),
        ("esrgan_x4", (60, 700), {}, {"max_tile_side": 256}),  # a GPU step: no side longer than the plan's profile
        ("animeganv2", (900, 500), {}, {}),  # not tiled, shrunk to its max_side: one call
    ],
)
def test_planned_tiles_equal_the_pipelines_calls(model, size, options, step):
    entry = _entry(model, **step)
    step = entry.step
    rng = np.random.default_rng(0)
    data = _bytes(Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)), "PNG")
    parsed = parse_options(step, tensors={n: a for n, _, a in option_tensors(options)})
    calls = []

    def network(batch):
        calls.append(len(batch))
        return np.repeat(np.repeat(batch, step.scale, axis=1), step.scale, axis=2)

    _, report = process(data, step, parsed, network)
    assert planned_tiles(*size, entry, parsed) == report.tiles == sum(calls)


# ---- jobs -------------------------------------------------------------------------------------------------------


def test_display_names_never_carry_a_path():
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\Users\\me\\photo.png") == "photo.png"
    assert display_name("\x00\x1b[31mred.png\n") == "[31mred.png"
    assert display_name(".hidden") == "hidden" and display_name("") == "upload" and display_name(None) == "upload"
    assert len(display_name("a" * 500 + ".png")) == 120


def _job(store: JobStore, state: str, size: int = 0, finished_ago: float = 0.0) -> Job:
    job = Job(id=store.new_id(), kind="image", format="PNG", name="p.png", model="m", options={}, upload_bytes=1)
    job.state, job.result_bytes = state, size
    job.finished_at = time.time() - finished_ago if state in ("done", "failed", "cancelled") else None
    store.add(job)
    return job


def test_store_bounds_time_size_and_count(tmp_path):
    async def run():
        store = JobStore(max_jobs=3, result_ttl=60, result_bytes=100, work_dir=tmp_path / "w")
        old = _job(store, "done", 10, finished_ago=120)
        store.sweep()
        assert store.get(old.id) is None  # past its time
        a, b = _job(store, "done", 60), _job(store, "done", 60)
        store.sweep()
        assert store.get(a.id) is None and store.get(b.id) is b  # over the byte budget: the oldest goes
        running = [_job(store, "running"), _job(store, "queued")]
        assert store.get(b.id) is b and len(store) == 3
        _job(store, "queued")  # full: the finished one makes room
        assert store.get(b.id) is None
        with pytest.raises(Busy):
            _job(store, "queued")  # full of active jobs
        assert all(store.get(j.id) is j for j in running)
        assert store.get("../etc") is None and store.get("A" * 24) is None
        store.close()
        assert not (tmp_path / "w" / "uploads").exists() and (tmp_path / "w").exists()

    asyncio.run(run())


def test_a_store_without_a_folder_makes_a_private_one_and_deletes_it(tmp_path):
    store = JobStore(max_jobs=1, result_ttl=1, result_bytes=1)
    root = store.root
    assert root.is_dir() and (root.stat().st_mode & 0o777) == 0o700
    store.close()
    assert not root.exists()


def test_progress_text_and_events():
    async def run():
        job = Job(
            id="0" * 24, kind="video", format="MP4", name="c.mp4", model="m", options={}, upload_bytes=1, unit="frame"
        )
        seen = job.version
        waiter = asyncio.create_task(job.wait_change(seen, 5))
        await asyncio.sleep(0)
        job.progress(3, 10)
        await asyncio.wait_for(waiter, 1)
        assert job.version == seen + 1 and job.stage == "frames 3 of 10"
        job.progress(1, None)
        job.total = None
        job.progress(1)
        assert job.stage == "frame: 1"

    asyncio.run(run())


def test_settings_from_flags_and_environment():
    s = WebSettings.from_env(
        {
            "STYLIZE_WEB_PORT": "9000",
            "STYLIZE_WEB_MAX_UPLOAD": "16M",
            "STYLIZE_URL": "h:1",
            "STYLIZE_ADMIN_KEY": "k" * 20,
        },
        port=9100,
    )
    assert (s.host, s.port, s.max_upload, s.url) == ("127.0.0.1", 9100, 16 * 1024 * 1024, "h:1")
    assert "k" * 20 not in repr(s)
    with pytest.raises(ValueError, match="STYLIZE_WEB_PORT"):
        WebSettings.from_env({"STYLIZE_WEB_PORT": "eighty"})
