"""Soak: `stylize serve` under steady load while its processes are killed, as the OOM killer would.

    python -m stylize.loadtest.experiments.soak                            # 10 minutes, concurrency 4
                                                                           # -> loadtest/results/soak/
    python -m stylize.loadtest.experiments.soak --minutes 2 --update-docs  # and rewrite docs/soak.md from the run

The real `stylize serve` runs as a subprocess (only the soaked models loaded, response cache off so every request
is computed); `concurrency` SDK clients send real photos round-robin over the models, each request retried by the
SDK's default policy. At 20 % and 50 % of the run one python stub of an image step is killed with SIGKILL (the
launcher's watchdog reloads the model: stylize.server.healing); at 75 % tritonserver itself is killed with SIGKILL
(`stylize serve` starts it again on the same ports). Every 10 s the tritonserver tree's PSS, its stub count and
the /dev/shm regions its stubs use are sampled.

Pass criteria, checked and written to the report: no request lost (a request is lost when it still fails after the
SDK's retries); after the stop, no stub of any of the run's tritonservers alive and none of their shared-memory
regions left in /dev/shm; memory flat (the peak PSS of the last third within 15 % of the peak of the second
third, which follows the first kills: the first third includes the warm-up).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stylize.loadtest.experiments import ROOT

SIZES = {"animeganv2": 256, "animevideo_x2": 96}  # real-photo crops: a request costs about 0.1-0.5 s here


@dataclass
class Event:
    at_s: float
    what: str
    pid: int
    in_flight: int  # requests in flight when it happened
    live_stubs: int  # the server's live stubs just before


@dataclass
class Sample:
    at_s: float
    pss_mb: float
    stubs: int
    shm_regions: int
    server_pid: int | None


@dataclass
class Result:
    minutes: float
    concurrency: int
    models: list[str]
    requests_ok: int = 0
    requests_lost: int = 0
    lost: list[str] = field(default_factory=list)
    attempts_retried: int = 0
    failed_attempts: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    server_lines: list[str] = field(default_factory=list)
    orphan_stubs_after_stop: list[int] = field(default_factory=list)
    shm_regions_left: list[str] = field(default_factory=list)
    serve_exit_code: int | None = None
    checks: dict[str, bool] = field(default_factory=dict)


def _children(pid: int, comm: str) -> list[int]:
    from stylize.server import healing

    return [st.pid for st in healing._children(pid, Path("/proc")) if st.comm == comm and st.state != "Z"]


def _wait_ready(http: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"stylize serve was not ready after {timeout:.0f} s")


def run(minutes: float, concurrency: int, models: list[str], repository: Path) -> Result:
    from stylize import StylizeClient
    from stylize.engine.photos import real_photo_crop
    from stylize.loadtest.experiments.server_memory import server_pss_mb
    from stylize.server import healing
    from stylize.server.settings import find_free_ports

    grpc, http, metrics = find_free_ports(3)
    stylize = Path(sys.executable).with_name("stylize")
    serve = subprocess.Popen(
        [
            str(stylize),
            "serve",
            "--model-repository",
            str(repository),
            "--models",
            ",".join(models),
            "--cache-size",
            "0",
            "--grpc-port",
            str(grpc),
            "--http-port",
            str(http),
            "--metrics-port",
            str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    res = Result(minutes=minutes, concurrency=concurrency, models=models)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True)
    reader.start()
    _wait_ready(http, 300)
    servers: list[int] = []
    regions: set[str] = set()

    def triton() -> int | None:
        pids = _children(serve.pid, "tritonserver")
        if pids and pids[0] not in servers:
            servers.append(pids[0])
        return pids[0] if pids else None

    images = {m: real_photo_crop(SIZES.get(m, 128), SIZES.get(m, 128)) for m in models}
    stop, in_flight, lock = threading.Event(), [0], threading.Lock()
    clients: list[StylizeClient] = []

    def worker(k: int) -> None:
        client = StylizeClient(url=f"127.0.0.1:{grpc}")
        clients.append(client)
        for model in itertools.islice(itertools.cycle(models), k, None):
            if stop.is_set():
                return
            with lock:
                in_flight[0] += 1
            try:
                client.infer(images[model], model=model)
                with lock:
                    res.requests_ok += 1
            except Exception as e:  # noqa: BLE001 - a lost request, recorded
                with lock:
                    res.requests_lost += 1
                    res.lost.append(f"{model}: {type(e).__name__}: {e}"[:300])
            finally:
                with lock:
                    in_flight[0] -= 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    duration = minutes * 60
    plan = [(0.20, "stub", models[0]), (0.50, "stub", models[-1]), (0.75, "tritonserver", "")]
    next_sample = 0.0
    while (now := time.monotonic() - t0) < duration:
        pid = triton()
        if pid is not None:
            live = healing.live_stubs(pid)
            regions.update(s.region for s in live.values() if s.region)
        if plan and now >= plan[0][0] * duration and pid is not None:
            _, what, model = plan.pop(0)
            from stylize.contract.descriptors import REGISTRY

            if what == "stub":
                victim = min(p for p, s in live.items() if s.model == REGISTRY[model].image_model)
                label = f"SIGKILL python stub of {REGISTRY[model].image_model}"
            else:
                victim, label = pid, "SIGKILL tritonserver"
            with lock:
                res.events.append(Event(round(now, 1), label, victim, in_flight[0], len(live)))
            os.kill(victim, signal.SIGKILL)
        if now >= next_sample and pid is not None:
            res.samples.append(
                Sample(
                    round(now, 1),
                    round(server_pss_mb(pid), 1),
                    len(live),
                    sum(1 for r in regions if (Path("/dev/shm") / r).exists()),
                    pid,
                )
            )
            next_sample += 10
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=300)
    for c in clients:
        res.attempts_retried += c.stats.retries
        for k, v in c.stats.errors.items():
            res.failed_attempts[k] = res.failed_attempts.get(k, 0) + v
        c.close()
    serve.send_signal(signal.SIGINT)
    res.serve_exit_code = serve.wait(timeout=120)
    reader.join(timeout=10)
    time.sleep(1)
    res.server_lines = [ln.rstrip() for ln in lines if ln.startswith("stylize")]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                argv = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"_stub") and len(argv) > 5 and argv[5].isdigit() and int(argv[5]) in servers:
                res.orphan_stubs_after_stop.append(int(p.name))
    res.shm_regions_left = sorted(r for r in regions if (Path("/dev/shm") / r).exists())
    third = [s for s in res.samples if s.at_s >= duration * 2 / 3]
    second = [s for s in res.samples if duration / 3 <= s.at_s < duration * 2 / 3]
    flat = bool(third and second) and max(s.pss_mb for s in third) <= 1.15 * max(s.pss_mb for s in second)
    heals = sum("reloaded" in ln for ln in res.server_lines)
    start_stubs = res.samples[0].stubs if res.samples else -1
    res.checks = {
        "no request lost": res.requests_lost == 0,
        "every killed stub healed": heals >= 2,
        # the reloads replaced every instance: the stub count is back where it started
        "all instances back before tritonserver is killed": bool(res.events)
        and res.events[-1].live_stubs == start_stubs,
        "tritonserver restarted": any("restarted" in ln for ln in res.server_lines),
        "no orphan stub after stop": not res.orphan_stubs_after_stop,
        "no shared memory left": not res.shm_regions_left,
        "memory flat": flat,
        "serve exited 0": res.serve_exit_code == 0,
    }
    return res


def markdown(res: Result, command: str) -> str:
    out = [
        f"# Soak: {res.minutes:g} minutes at concurrency {res.concurrency}, stubs killed twice, tritonserver once",
        "",
        f"Measured by `{command}` on this machine (2 shared cores, no GPU); models "
        f"{', '.join(res.models)} (real-photo crops, response cache off, the SDK's default retries).",
        "",
        "| check | result |",
        "|---|---|",
    ]
    out += [f"| {k} | {'pass' if v else 'FAIL'} |" for k, v in res.checks.items()]
    out += [
        "",
        f"Requests: {res.requests_ok} answered, {res.requests_lost} lost; {res.attempts_retried} attempts "
        f"retried by the SDK (failed attempts by kind: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(res.failed_attempts.items())) or 'none'}).",
        "",
        "| at (s) | event | pid | requests in flight | live stubs before |",
        "|---:|---|---:|---:|---:|",
    ]
    out += [f"| {e.at_s:.0f} | {e.what} | {e.pid} | {e.in_flight} | {e.live_stubs} |" for e in res.events]
    out += [
        "",
        "What `stylize serve` said:",
        "",
        "```",
        *res.server_lines,
        "```",
        "",
        "| at (s) | tritonserver pid | PSS of server + stubs (MB) | live stubs | its /dev/shm regions present |",
        "|---:|---:|---:|---:|---:|",
    ]
    out += [f"| {s.at_s:.0f} | {s.server_pid} | {s.pss_mb:.0f} | {s.stubs} | {s.shm_regions} |" for s in res.samples]
    out += [
        "",
        f"After the stop: orphan stubs {res.orphan_stubs_after_stop or 'none'}; shared-memory regions of the "
        f"run still in /dev/shm: {res.shm_regions_left or 'none'}.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stylize.loadtest.experiments.soak", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--models", default="animevideo_x2,animeganv2")
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "soak")
    p.add_argument("--update-docs", action="store_true", help="also write docs/soak.md")
    args = p.parse_args(argv)
    res = run(args.minutes, args.concurrency, [m.strip() for m in args.models.split(",")], args.model_repository)
    command = "python -m stylize.loadtest.experiments.soak" + (
        f" --minutes {args.minutes:g}" if args.minutes != 10 else ""
    )
    text = markdown(res, command)
    from stylize.contract.fileio import write_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "soak.json", json.dumps(asdict(res), indent=1).encode())
    write_atomic(args.out / "soak.md", text.encode())
    if args.update_docs:
        write_atomic(ROOT / "docs" / "soak.md", text.encode())
    print(text)
    return 0 if all(res.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
