"""`stylize web` in a real browser (Debian chromium + chromium-driver, selenium) against a real `stylize web`
subprocess and a real tritonserver with the response cache on; and its HTTP API without a browser.

The server is this module's own (a small repository: the animevideo models, linked from the built one), because
the session's server runs without a response cache. Screenshots go to docs/web/ (desktop and phone).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from stylize.contract.descriptors import REGISTRY
from stylize.contract.errors import InvalidInput
from stylize.engine.photos import photo_path, real_photo_crop
from stylize.sdk.client import StylizeClient

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "web"
MODEL = "animevideo_x2"  # the fastest network; animevideo_x4 is served too, so the page lists more than one
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MAX_UPLOAD = 8 * 1024 * 1024
TILE = 128  # chelsea.png (451x300) in 128-pixel tiles: 12 tiles, so progress has something to count


# ---- servers --------------------------------------------------------------------------------------------------


def small_repository(built: Path, repo: Path, models: tuple[str, ...]) -> Path:
    """A repository of a few models, linked from the built one (a quick server start)."""
    repo.mkdir(parents=True, exist_ok=True)
    for model in models:
        for name in REGISTRY[model].triton_models:
            if not (repo / name).exists():  # the request check is shared by every image ensemble
                (repo / name).symlink_to((built / name).resolve(), target_is_directory=True)
    return repo


@pytest.fixture(scope="module")
def triton(model_repository, tmp_path_factory):
    from stylize.server.launcher import start_local

    repo = small_repository(model_repository, tmp_path_factory.mktemp("web_repository"), (MODEL, "animevideo_x4"))
    with start_local(repo, cache_size=64 * 1024 * 1024) as server:
        yield server


@dataclass
class Web:
    base: str
    work: Path
    proc: subprocess.Popen
    triton_url: str
    admin_key: str

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, *, headers: dict | None = None) -> tuple[int, bytes, dict]:
        req = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def json(self, path: str) -> dict:
        status, body, _ = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def post(self, query: str, data: bytes, *, ctype: str = "application/octet-stream") -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url(f"/api/jobs?{query}"), data=data, method="POST", headers={"Content-Type": ctype}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def send_large(self, size: int, *, declared: bool) -> int:
        """POST ``size`` zero bytes: with a Content-Length and no body sent (a refusal must come before the body),
        or chunked, the last byte in its own chunk (the server has read everything when it refuses)."""
        import http.client

        host, port = self.base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.putrequest("POST", f"/api/jobs?model={MODEL}&name=zeros.bin")
            conn.putheader("Content-Type", "application/octet-stream")
            if declared:
                conn.putheader("Content-Length", str(size))
                conn.endheaders()
            else:
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                mib = 1024 * 1024
                for chunk in [mib] * ((size - 1) // mib) + [(size - 1) % mib, 1]:
                    if chunk:
                        conn.send(f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def wait(self, job_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.json(f"/api/jobs/{job_id}")
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")

    def uploads_left(self) -> list[str]:
        d = self.work / "uploads"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@pytest.fixture(scope="module")
def web(triton, tmp_path_factory):
    from stylize.server.settings import find_free_ports

    port = find_free_ports(1)[0]
    work = tmp_path_factory.mktemp("web_work")
    log = open(work.parent / "stylize-web.log", "w")
    env = dict(os.environ, STYLIZE_ADMIN_KEY=triton.admin_key)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stylize.cli",
            "web",
            "--url",
            triton.grpc_url,
            "--port",
            str(port),
            "--work-dir",
            str(work),
            "--max-upload",
            str(MAX_UPLOAD),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    w = Web(f"http://127.0.0.1:{port}", work, proc, triton.grpc_url, triton.admin_key)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"stylize web exited with {proc.returncode}: {Path(log.name).read_text()}")
        try:
            if w.get("/api/health")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"stylize web did not answer in 60 s: {Path(log.name).read_text()}")
        time.sleep(0.2)
    try:
        yield w
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
        assert rc == 0, Path(log.name).read_text()
        assert not (work / "uploads").exists() and not (work / "results").exists()  # deleted at exit


@pytest.fixture(scope="module")
def sdk(triton):
    with StylizeClient(url=triton.grpc_url, admin_key=triton.admin_key) as c:
        yield c


# ---- the browser ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMEDRIVER.exists():
        pytest.fail(
            "the browser tests need Debian chromium + chromium-driver: apt-get install chromium "
            "chromium-driver (the Makefile's system-deps does)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1440,900",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver, width: int, height: int, *, phone: bool = False) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 2 if phone else 1, "mobile": phone},
    )


def screenshot(driver, name: str, *, full_page: bool = True) -> Path:
    """docs/web/<name>.png: the whole page, or what the viewport shows."""
    import base64

    DOCS.mkdir(parents=True, exist_ok=True)
    params = {"format": "png"}
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        width = driver.execute_script("return document.documentElement.clientWidth")
        params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
    path = DOCS / f"{name}.png"
    path.write_bytes(base64.b64decode(driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]))
    return path


def wait_for(driver, script: str, timeout: float = 180, *args):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


def open_page(driver, web: Web) -> None:
    driver.get(web.base)
    wait_for(driver, f"return !!document.querySelector('#model option[value=\"{MODEL}\"]')", 30)
    driver.execute_script(
        f"const s = document.querySelector('#model'); s.value = '{MODEL}';s.dispatchEvent(new Event('change'));"
    )


def set_option(driver, name: str, value) -> None:
    driver.execute_script(
        "const i = document.querySelector(`#opt-${arguments[0]}`); i.value = arguments[1];", name, str(value)
    )


def upload(driver, *paths: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))


CARD = "return [...document.querySelectorAll('#items .item')].filter(i => i.querySelector('.name').textContent === arguments[0])"


def card(driver, name: str, index: int = 0):
    """The ``index``-th card (newest first) of a file ``name`` once it has finished."""
    wait_for(driver, CARD + f"[{index}]?.dataset.state.match(/^(done|failed|cancelled)$/)", 180, name)
    return driver.execute_script(CARD + f"[{index}]", name)


def attrs(driver, element) -> dict:
    return driver.execute_script(
        """
        const e = arguments[0], q = (s) => e.querySelector(s);
        return {state: e.dataset.state, job: e.dataset.job, events: +(e.dataset.events || 0),
                uploadEvents: +(e.dataset.uploadEvents || 0), doneSeen: (e.dataset.doneSeen || '').split(' '),
                total: +(e.dataset.total || 0), cache: q('.cache').hidden ? '' : q('.cache').textContent,
                cacheHit: q('.cache').classList.contains('hit'), error: q('.error').hidden ? '' : q('.error').textContent,
                facts: q('.facts') ? q('.facts').textContent : '', work: q('.bar.work .bar-text').textContent,
                img: q('img.after') ? [q('img.after').naturalWidth, q('img.after').naturalHeight,
                                       q('img.after').complete] : null,
                download: q('a.download') ? q('a.download').getAttribute('href') : null};
    """,
        element,
    )


def no_horizontal_scroll(driver) -> list[str]:
    """Elements reaching past the viewport's right edge (empty when the page fits)."""
    return driver.execute_script("""
        const w = document.documentElement.clientWidth, out = [];
        if (document.documentElement.scrollWidth > w) out.push('document scrollWidth ' +
            document.documentElement.scrollWidth + ' > ' + w);
        for (const e of document.querySelectorAll('body *')) {
            const r = e.getBoundingClientRect();
            if (r.width && r.right > w + 0.5 && getComputedStyle(e).position !== 'absolute')
                out.push(e.tagName + '.' + e.className + ' right=' + r.right);
        }
        return out;
    """)


# ---- files ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("web_files")
    chelsea = d / "chelsea.png"
    chelsea.write_bytes(photo_path("chelsea.png").read_bytes())  # the real file, as a person would pick it
    small = d / "coffee small.png"
    Image.fromarray(real_photo_crop(64, 96, name="coffee.png")).save(small)
    broken = d / "broken.png"
    broken.write_bytes(chelsea.read_bytes()[:3000])  # a real PNG cut short
    cut = d / "cut.jpg"
    cut.write_bytes(photo_path("rocket.jpg").read_bytes()[:5000])  # a real JPEG cut short
    return {"chelsea": chelsea, "small": small, "broken": broken, "cut": cut}


# ---- `stylize web --serve` (make run) ---------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_starts_triton_beside_the_page_and_ctrl_c_stops_both(model_repository, tmp_path, files):
    """Runs before this module's own server starts (file order): one tritonserver at a time."""
    from stylize.server.settings import find_free_ports, port_is_free

    repo = small_repository(model_repository, tmp_path / "repo", (MODEL,))
    ports = find_free_ports(4)
    env = {k: v for k, v in os.environ.items() if k not in ("STYLIZE_ADMIN_KEY", "STYLIZE_CACHE_SIZE", "STYLIZE_URL")}
    log = tmp_path / "web.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stylize.cli",
                "web",
                "--serve",
                "--model-repository",
                str(repo),
                "--port",
                str(ports[0]),
                "--grpc-port",
                str(ports[1]),
                "--http-port",
                str(ports[2]),
                "--metrics-port",
                str(ports[3]),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    web = Web(f"http://127.0.0.1:{ports[0]}", tmp_path, proc, f"127.0.0.1:{ports[1]}", "")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if web.get("/api/models")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        (entry,) = web.json("/api/models")["models"]
        # the page reads the configs with the key of the server it started (weights status, the step's settings)
        assert entry["id"] == MODEL and entry["weights"] == "real" and entry["settings_from"] == "server"
        photo = files["small"].read_bytes()
        first, again = (web.wait(web.post(f"model={MODEL}&outscale=1", photo)[1]["id"]) for _ in range(2))
        assert first["state"] == again["state"] == "done"
        assert again["cache"]["answered_from_cache"], again  # --serve turns Triton's response cache on
        assert f"http://127.0.0.1:{ports[0]}/" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, log.read_text()
    assert "stopping tritonserver" in log.read_text()
    assert port_is_free(ports[1], "127.0.0.1") and port_is_free(ports[0], "127.0.0.1")  # both are gone


# ---- in the browser -------------------------------------------------------------------------------------------


def test_photo_progress_result_download_and_response_cache(browser, web, files, sdk):
    viewport(browser, 1440, 900)
    open_page(browser, web)
    set_option(browser, "tile_size", TILE)
    upload(browser, files["chelsea"])
    a = attrs(browser, card(browser, "chelsea.png"))

    assert a["state"] == "done", a
    assert a["uploadEvents"] >= 1  # XHR upload progress events
    # processing progress: Server-Sent Events with the tiles Triton answered, 0 .. 12, in order
    seen = [int(x) for x in a["doneSeen"]]
    assert a["total"] == 12 and seen == sorted(seen) and seen[-1] == 12 and len(seen) >= 4, a
    assert a["events"] >= 4
    assert a["img"] == [902, 600, True]  # chelsea.png is 451x300; the model is x2
    assert "451×300 → 902×600" in a["facts"] and "12 tiles" in a["facts"]
    assert a["cache"].startswith("Computed by Triton: not in its response cache yet") and not a["cacheHit"]

    api_bytes = web.get(a["download"].replace("?download=1", ""))[1]
    # the tile-by-tile result is what the ensemble returns for the whole photo, byte for byte
    assert api_bytes == sdk.infer_bytes(files["chelsea"].read_bytes(), MODEL, tile_size=TILE)

    browser.execute_script("arguments[0].querySelector('a.download').click()", card(browser, "chelsea.png"))
    target = browser.downloads / "chelsea_animevideo_x2.png"
    deadline = time.monotonic() + 30
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    assert target.read_bytes() == api_bytes

    # the same photo with the same options again: every tile is answered from Triton's response cache
    upload(browser, files["chelsea"])
    wait_for(browser, CARD + ".length === 2", 10, "chelsea.png")
    b = attrs(browser, card(browser, "chelsea.png", 0))
    assert b["state"] == "done" and b["cacheHit"], b
    assert "Answered from Triton's response cache (all 12 tiles)" in b["cache"]
    assert web.get(b["download"].replace("?download=1", ""))[1] == api_bytes
    assert no_horizontal_scroll(browser) == []
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "desktop", full_page=False)
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", card(browser, "chelsea.png", 1))
    screenshot(browser, "desktop-result", full_page=False)  # the first upload: computed, tile by tile


def test_bad_file_shows_the_servers_reason_and_the_good_one_succeeds(browser, web, files, sdk):
    upload(browser, files["broken"], files["small"])
    bad = attrs(browser, card(browser, "broken.png"))
    good = attrs(browser, card(browser, "coffee small.png"))

    # the server's reason for this file, asked of the other model (same image step code): asking the same model
    # would be a repeat of the page's request (see test_a_refused_file_is_refused_again)
    with pytest.raises(InvalidInput) as refused:
        sdk.infer_bytes(files["broken"].read_bytes(), "animevideo_x4", tile_size=TILE)
    assert bad["state"] == "failed"
    assert bad["error"] == f"Triton refused it (INVALID_ARGUMENT): {refused.value.reason}"
    assert good["state"] == "done" and good["img"] == [192, 128, True] and "96×64 → 192×128" in good["facts"]
    assert web.uploads_left() == []  # temporary files of both are gone


def test_clip_with_sound_plays_in_the_page(browser, web, tmp_path):
    from clips import make_clip, probe

    src = make_clip(tmp_path / "clip.mp4", size="64x48", rate=10, seconds=1.0)
    upload(browser, src)
    a = attrs(browser, card(browser, "clip.mp4"))
    assert a["state"] == "done", a
    seen = [int(x) for x in a["doneSeen"]]
    assert a["total"] == 10 and seen[-1] == 10 and seen == sorted(seen), a
    assert "Raw frames" in a["cache"] or "raw frames" in a["cache"]

    element = card(browser, "clip.mp4")
    # the result plays in the page, sound included (Chromium counts the audio bytes it decoded)
    played = browser.execute_async_script(
        """
        const v = arguments[0].querySelector('video.after'), done = arguments[1];
        const report = () => done({duration: v.duration, width: v.videoWidth, height: v.videoHeight,
                                   audio: v.webkitAudioDecodedByteCount, time: v.currentTime, error: v.error && v.error.code});
        v.muted = false;
        v.play().then(() => setTimeout(() => { v.pause(); report(); }, 600)).catch((e) => done({error: String(e)}));
    """,
        element,
    )
    assert played.get("error") is None, played
    assert abs(played["duration"] - 1.0) < 0.15 and (played["width"], played["height"]) == (128, 96), played
    assert played["audio"] > 0 and played["time"] > 0, played

    data = web.get(a["download"].replace("?download=1", ""))[1]
    status, part, _ = web.get(a["download"].replace("?download=1", ""), headers={"Range": "bytes=0-99"})
    assert status == 206 and part == data[:100]  # seeking in the page's player
    out = tmp_path / "out.mp4"
    out.write_bytes(data)
    before, after = probe(src), probe(out)
    assert len(after["frames"]) == len(before["frames"]) == 10
    assert after["audio"] == ["aac"] and after["size"] == (128, 96)
    assert web.uploads_left() == []
    assert no_horizontal_scroll(browser) == []


def test_phone_layout_has_no_horizontal_scroll(browser, web, files):
    viewport(browser, 390, 844, phone=True)
    open_page(browser, web)
    assert browser.execute_script("return innerWidth") == 390
    assert no_horizontal_scroll(browser) == []
    upload(browser, files["small"], files["cut"])
    assert attrs(browser, card(browser, "coffee small.png"))["state"] == "done"
    bad = attrs(browser, card(browser, "cut.jpg"))
    assert bad["state"] == "failed" and bad["error"].startswith("Triton refused it (INVALID_ARGUMENT): "), bad
    wait_for(browser, "return [...document.images].every(i => i.complete)", 30)
    assert no_horizontal_scroll(browser) == []
    screenshot(browser, "phone")


# ---- the HTTP API, without a browser --------------------------------------------------------------------------


def _events(web: Web, job_id: str) -> list[tuple[str, dict]]:
    out, kind = [], None
    with urllib.request.urlopen(web.url(f"/api/jobs/{job_id}/events"), timeout=120) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def test_api_jobs_status_events_result_and_limits(web, files, sdk):
    models = web.json("/api/models")
    entry = next(m for m in models["models"] if m["id"] == MODEL)
    assert entry["images"] and entry["videos"] and entry["weights"] == "real" and entry["settings_from"] == "server"
    tile = next(o for o in entry["options"] if o["name"] == "tile_size")
    tiling = REGISTRY[MODEL].serving.tiling
    assert tile["max"] == tiling.size and tile["min"] > 2 * tiling.overlap
    assert {m["id"] for m in models["models"]} == {MODEL, "animevideo_x4"}
    assert models["limits"]["max_upload"] == MAX_UPLOAD

    photo = files["small"].read_bytes()
    status, job = web.post(f"model={MODEL}&name=..%2F..%2Fetc%2Fpasswd&output_format=JPEG&quality=80", photo)
    assert status == 202 and job["state"] in ("queued", "running") and job["name"] == "passwd"
    events = _events(web, job["id"])
    assert events[-1][0] == "end" and all(k == "job" for k, _ in events[:-1])
    done = events[-1][1]
    assert done["state"] == "done" and done["progress"]["done"] == done["progress"]["total"] == 1
    assert done["result"]["media_type"] == "image/jpeg" and done["result"]["filename"] == "passwd_animevideo_x2.jpg"
    status, body, headers = web.get(done["result"]["url"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == sdk.infer_bytes(photo, MODEL, output_format="JPEG", quality=80)
    assert Image.open(io.BytesIO(body)).size == (192, 128)
    assert "attachment" in web.get(done["result"]["download_url"])[2]["Content-Disposition"]

    # refusals, before anything reaches Triton
    assert web.post(f"model={MODEL}", photo, ctype="multipart/form-data; boundary=x")[0] == 415
    assert web.post("model=nope", photo)[0] == 404
    assert web.post(f"model={MODEL}&quality=500", photo)[0] == 400
    assert web.post(f"model={MODEL}", b"")[0] == 400
    assert web.send_large(MAX_UPLOAD + 1, declared=True) == 413  # refused on its Content-Length, unread
    assert web.send_large(MAX_UPLOAD + 1, declared=False) == 413  # chunked: refused once past the limit
    assert web.send_large(MAX_UPLOAD - 1024, declared=False) == 202  # within it: a job (of a file that is no image)
    assert web.get("/api/health", headers={"Host": "attacker.example"})[0] == 400  # DNS rebinding
    assert web.get("/api/jobs/not-a-job-id")[0] == 404

    # a job cancelled while its tiles go to Triton is gone, with its files, and frees its slot
    status, job = web.post(f"model={MODEL}&tile_size=48", files["chelsea"].read_bytes())
    assert status == 202
    deadline = time.monotonic() + 60
    while web.json(f"/api/jobs/{job['id']}")["progress"]["done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    running = web.json(f"/api/jobs/{job['id']}")
    assert running["state"] == "running" and running["progress"]["total"] > 50, running
    req = urllib.request.Request(web.url(f"/api/jobs/{job['id']}"), method="DELETE")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204
    assert web.get(f"/api/jobs/{job['id']}")[0] == 404
    assert web.uploads_left() == []
    status, job = web.post(f"model={MODEL}&outscale=1", photo)
    assert status == 202 and web.wait(job["id"], 60)["state"] == "done"


def test_a_refused_file_is_refused_again(web):
    """A person drops the same bad file twice: both times the page shows the server's reason."""
    bad = photo_path("astronaut.png").read_bytes()[:4000]
    for attempt in range(2):
        status, job = web.post(f"model={MODEL}&name=again.png", bad)
        assert status == 202
        job = web.wait(job["id"], 60)
        assert job["state"] == "failed" and job["error"]["status"] == "INVALID_ARGUMENT", (attempt, job["error"])
