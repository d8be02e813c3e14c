"""The `stylize` CLI against the real server: infer over folders (layout, naming, failures, side by side, never
overwriting inputs), models, health, video, and a folder run that survives a server kill and restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stylize.cli import main
from stylize.contract.descriptors import REGISTRY
from stylize.engine.photos import real_photo_crop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MODEL = "animevideo_x2"  # the fastest image model: keeps these tests quick
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]


@pytest.fixture(scope="module")
def url(server):
    return server.grpc_url


def _photo_tree(root: Path, n: int = 4, side: int = 32) -> list[Path]:
    paths = []
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]
        p = root / ("sub" if i % 2 else "") / f"p{i:03d}{'.jpg' if name.endswith('.jpg') else '.png'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(real_photo_crop(side, side, name=name, offset=(i, -i))).save(p)
        paths.append(p)
    return paths


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")]))


def test_infer_folder_keeps_layout_and_reports_unreadable_files(url, tmp_path, capsys):
    src = tmp_path / "photos"
    inputs = _photo_tree(src)
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (src / "notes.txt").write_text("not an image")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out"

    rc = main(
        [
            "infer",
            str(src),
            "-m",
            MODEL,
            "-o",
            str(out),
            "--suffix",
            "_x2",
            "--ext",
            "jpg",
            "--url",
            url,
            "--no-progress",
            "-j",
            "4",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 1  # one unreadable file
    assert "broken.png: corrupt" in captured.err  # the server's reason
    assert f"{len(inputs)} of {len(inputs) + 1} images written" in captured.out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(f"{p.relative_to(src).parent.as_posix()}/{p.stem}_x2.jpg".lstrip("./") for p in inputs)
    for p in out.rglob("*.jpg"):
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.size == (64, 64)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # inputs untouched


def test_ext_auto_keeps_each_input_s_format(url, tmp_path, capsys):
    """``--ext auto`` (Real-ESRGAN's option) over a folder and a single file: every output in its input's format
    and extension. The same pixels sent as PNG, TIFF and BMP give the same result pixels (BMP and TIFF come back
    from the server as PNG and are written losslessly); a 16-bit TIFF stays 16-bit."""
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    pixels = real_photo_crop(24, 32)
    Image.fromarray(pixels).save(src / "a.png")
    Image.fromarray(pixels).save(src / "b.tif")
    Image.fromarray(pixels).save(src / "sub" / "c.bmp")
    Image.fromarray(pixels).save(src / "d.JPG", quality=95)
    Image.fromarray(pixels).save(src / "e.webp", lossless=True)
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(src / "f.tiff")
    out = tmp_path / "out"
    rc = main(["infer", str(src), "-m", MODEL, "-o", str(out), "--ext", "auto", "--url", url, "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    expected = {
        "a.png": ("PNG", "RGB"),
        "b.tif": ("TIFF", "RGB"),
        "sub/c.bmp": ("BMP", "RGB"),
        "d.JPG": ("JPEG", "RGB"),
        "e.webp": ("WEBP", "RGB"),
        "f.tiff": ("TIFF", "I;16"),
    }
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(expected)
    results = {}
    for name, (fmt, mode) in expected.items():
        with Image.open(out / name) as im:
            assert (im.format, im.mode.replace("I;16B", "I;16"), im.size) == (fmt, mode, (64, 48)), name
            results[name] = np.asarray(im)
    np.testing.assert_array_equal(results["b.tif"], results["a.png"])
    np.testing.assert_array_equal(results["sub/c.bmp"], results["a.png"])
    # one file to a file name: that name's format
    single = tmp_path / "single.tif"
    assert (
        main(
            [
                "infer",
                str(src / "d.JPG"),
                "-m",
                MODEL,
                "-o",
                str(single),
                "--ext",
                "auto",
                "--url",
                url,
                "--no-progress",
            ]
        )
        == 0
    )
    with Image.open(single) as im:
        assert im.format == "TIFF" and im.size == (64, 48)


def test_infer_never_overwrites_an_input(url, tmp_path, capsys):
    src = tmp_path / "photos"
    [a] = _photo_tree(src, n=1)
    original = a.read_bytes()
    rc = main(["infer", str(src), "-m", MODEL, "-o", str(src), "--url", url, "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1 and "overwrite an input" in captured.err
    assert a.read_bytes() == original
    rc = main(["infer", str(a), "-m", MODEL, "-o", str(src), "--suffix", "_x2", "--url", url, "--no-progress"])
    assert rc == 0 and (src / f"{a.stem}_x2.png").is_file() and a.read_bytes() == original


def test_infer_single_file_side_by_side_writes_the_result_and_the_composite(url, tmp_path, capsys):
    src = tmp_path / "in.png"
    arr = real_photo_crop(24, 32)
    Image.fromarray(arr).save(src)
    dst = tmp_path / "result.png"
    rc = main(["infer", str(src), "-m", MODEL, "-o", str(dst), "--side-by-side", "--url", url, "--no-progress"])
    assert rc == 0, capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "result.png", "result_side_by_side.png"]
    with Image.open(dst) as im:
        result = np.asarray(im.convert("RGB"))
    with Image.open(tmp_path / "result_side_by_side.png") as im:
        pair = np.asarray(im.convert("RGB"))
    assert result.shape == (48, 64, 3)  # the plain x2 result, as without --side-by-side
    assert pair.shape == (48, 128, 3)  # input resized to 48x64 on the left, the x2 result on the right
    from stylize.sdk.client import StylizeClient

    with StylizeClient(url=url) as c:
        expected = c.infer(arr, MODEL)
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(pair[:, 64:], expected)
    umask = os.umask(0)
    os.umask(umask)
    for p in (dst, tmp_path / "result_side_by_side.png"):  # an output gets the mode of any file the user writes
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_models_and_health(server, url, capsys, monkeypatch):
    # without the admin key the listing comes from the open APIs: no weights status (it is in the model configs)
    monkeypatch.delenv("STYLIZE_ADMIN_KEY", raising=False)
    assert main(["models", "--url", url, "--json"]) == 0
    assert {m["weights"] for m in json.loads(capsys.readouterr().out)} == {"?"}
    monkeypatch.setenv("STYLIZE_ADMIN_KEY", server.admin_key)
    assert main(["models", "--url", url]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:6] == ["MODEL", "TASK", "SCALE", "VERSIONS", "WEIGHTS", "READY"]
    assert main(["models", "--url", url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    for m in listed:
        assert (
            REGISTRY[m["id"].removesuffix("_int8")].scale == m["scale"]
            and m["weights"] in ("real", "untrained")
            and m["versions"]
        )
    assert any(line.startswith(f"{m['id']} ") for m in listed for line in table.splitlines())
    # every served version's own weights label (issue 19: a pinned version is labelled as itself, not the newest)
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    for m in listed:
        labels = {int(v): status for v, status in m["weights_versions"].items()}
        assert set(m["versions"]) <= set(labels) and labels[max(labels)] == m["weights"], m
        assert all(f"{v}:{labels[v]}" in rows[m["id"]].split() for v in m["versions"]), rows[m["id"]]

    assert main(["health", "--url", url]) == 0
    assert "live, ready" in capsys.readouterr().out
    assert main(["health", "--url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_health_of_a_missing_server_fails(capsys, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("STYLIZE_URL", f"127.0.0.1:{port}")  # STYLIZE_URL is the default of --url
    assert main(["health"]) == 1
    assert "unreachable" in capsys.readouterr().out


def test_video_command(url, tmp_path, capsys):
    import av  # noqa: F401  (installed by make test)
    from clips import make_clip

    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5)
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["video", str(clip), "-o", str(out), "-m", MODEL, "--preset", "ultrafast", "--url", url, "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (out / f"clip_{MODEL}.mp4").is_file()
    assert "5 frames 64x48 -> 128x96 at 10 fps, audio copied (aac)" in captured.out


def _small_repository(model_repository: Path, dst: Path, model_id: str) -> Path:
    """Only one model's Triton models (symlinked): a restart takes seconds, not the whole repository's load time."""
    dst.mkdir()
    for name in REGISTRY[model_id].triton_models:
        (dst / name).symlink_to((model_repository / name).resolve(), target_is_directory=True)
    return dst


def _shared_memory_of(pgid: int) -> set[str]:
    """/dev/shm files mapped by a process group (a SIGKILLed server cannot unlink its python stubs' regions)."""
    names = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) != pgid:
                continue
            for line in (d / "maps").read_text().splitlines():
                if " /dev/shm/" in line:
                    names.add(line.split(" /dev/shm/", 1)[1].removesuffix(" (deleted)"))
        except (OSError, ProcessLookupError):
            continue
    return {f"/dev/shm/{n}" for n in names}


@pytest.mark.slow
def test_folder_run_survives_a_server_kill_and_restart(model_repository, tmp_path):
    """SIGKILL the server mid-run, start it again on the same ports: every file arrives (retries on UNAVAILABLE)
    and the summary says how many requests were retried."""
    from stylize.server.launcher import TritonServer, start_local

    repo = _small_repository(model_repository, tmp_path / "repo", MODEL)
    src = tmp_path / "photos"
    inputs = _photo_tree(src, n=40, side=48)
    out = tmp_path / "out"
    server = start_local(repo)
    restarted = None
    proc = None
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stylize.cli",
                "infer",
                str(src),
                "-m",
                MODEL,
                "-o",
                str(out),
                "-j",
                "2",
                "--url",
                server.grpc_url,
                "--retry-for",
                "120",
                "--no-progress",
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(list(out.rglob("*.png"))) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.01)
        leaked = _shared_memory_of(server.pid)
        os.killpg(server.pid, signal.SIGKILL)  # the server and its python stubs, no drain
        server.stop()
        for name in leaked:
            Path(name).unlink(missing_ok=True)
        done_at_kill = len(list(out.rglob("*.png")))
        assert done_at_kill < len(inputs), "the run finished before the kill: use more files"
        time.sleep(1.0)  # the client sees a dead server for a while
        restarted = TritonServer(server.settings).start()
        restarted.wait_ready()
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for s in (server, restarted):
            if s is not None:
                s.stop()
    print(stdout)  # the run's summary (pytest -rP shows it)
    assert proc.returncode == 0, (stdout, stderr)
    written = sorted(p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.png"))
    assert written == sorted(p.relative_to(src).with_suffix("").as_posix() for p in inputs)  # no file lost
    for p in out.rglob("*.png"):
        with Image.open(p) as im:
            assert im.size == (96, 96)
    assert f"{len(inputs)} of {len(inputs)} images written" in stdout
    assert "the server was unavailable 1 time for " in stdout and "attempts retried" in stdout, stdout
