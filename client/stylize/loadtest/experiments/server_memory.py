"""Resident memory of a local server (tritonserver + its python stubs): idle, then after every image ensemble has
run one large photo on both of its step instances. The number behind the CPU pod's memory (k8s/overlays/cpu).

    python -m stylize.loadtest.experiments.server_memory        # the repository as built (CPU steps run the
                                                                # network themselves)
    python -m stylize.loadtest.experiments.server_memory --bls  # the same, with the image steps calling the
                                                                # network by BLS

INT8 variants are left out unless ``--int8`` (the image a pod runs is built with `stylize build`, which makes none).

The server runs on a temporary repository of symlinks to the built models (image step configs rewritten for
``--bls``). Prints one line per step; ``--out`` also writes the figures as JSON (k8s/capacity/server-memory.json:
the idle server's PSS is a term of the CPU pod's worst case, stylize_k8s.memory_budget).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from stylize.contract.descriptors import ENCODED_IMAGE, MODELS
from stylize.engine.photos import real_photo_crop
from stylize.server.launcher import start_local

SIDES = {"esrgan_x4": 400}  # the rest at 512²: a large input within every model's limits, tiled where it is tiled


def _tree(pid: int, rows: list[list[str]]) -> set[int]:
    tree, grew = {pid}, True
    while grew:  # the stubs are the server's children (and may start their own)
        before = len(tree)
        tree |= {int(r[0]) for r in rows if int(r[1]) in tree}
        grew = len(tree) > before
    return tree


def server_pss_mb(pid: int) -> float:
    """Proportional set size (MB) of the server ``pid`` and its stubs: each shared page (OpenVINO's and ONNX
    Runtime's libraries, mapped by every stub) counted once over the processes that map it, as a cgroup, and so a
    pod's memory limit, charges it once; the RSS sum counts it in every process."""
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True, check=True).stdout
    total = 0
    for p in _tree(pid, [line.split() for line in out.splitlines()[1:]]):
        try:
            total += sum(
                int(line.split()[1])
                for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
                if line.startswith("Pss:")
            )
        except OSError:
            pass  # a process gone meanwhile
    return total / 1024


def server_rss_mb(pid: int | None = None) -> float:
    """Resident memory (MB) of the server ``pid`` and every process under it (its python stubs); without a pid, of
    every tritonserver and python-stub process on this machine."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,rss,args"], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()[1:]]
    if pid is None:
        return (
            sum(
                int(r[2])
                for r in rows
                if len(r) > 3 and ("tritonserver" in r[3] or "triton_python_backend_stub" in r[3])
            )
            / 1024
        )
    tree = _tree(pid, rows)
    return sum(int(r[2]) for r in rows if int(r[0]) in tree) / 1024


def mirror(source: Path, target: Path, *, bls: bool, int8: bool = False) -> Path:
    """Symlinks to ``source``'s models (INT8 variants only with ``int8``: `stylize build` alone makes none)."""
    target.mkdir(parents=True, exist_ok=True)
    for model in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if "_int8" in model.name and not int8:
            continue
        if bls and model.name.endswith("_image"):
            shutil.copytree(model, target / model.name)
            config = target / model.name / "config.pbtxt"
            config.write_text(
                re.sub(r'(key: "net_runtime" value: \{ string_value: )"\w+"', r'\1"triton"', config.read_text())
            )
        else:
            (target / model.name).symlink_to(model.resolve(), target_is_directory=True)
    return target


def main(argv: list[str] | None = None) -> None:
    import tritonclient.grpc as grpcclient
    from PIL import Image

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    p.add_argument("--bls", action="store_true", help="image steps call the network by BLS")
    p.add_argument("--int8", action="store_true", help="load the INT8 variants too (not run)")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    figures: dict = {
        "format": "stylize-server-memory/1",
        "measured_at": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python -m stylize.loadtest.experiments.server_memory"
        + (" --bls" if args.bls else "")
        + (" --int8" if args.int8 else ""),
        "after": [],
    }
    with tempfile.TemporaryDirectory(prefix="stylize-memory-") as tmp:
        repo = mirror(args.model_repository, Path(tmp), bls=args.bls, int8=args.int8)
        with start_local(repo) as server:

            def sample() -> dict:  # this server's process tree only
                return {"rss_mib": round(server_rss_mb(server.pid), 1), "pss_mib": round(server_pss_mb(server.pid), 1)}

            def rss(f: dict) -> str:
                return f"RSS {f['rss_mib']:.0f} MiB, PSS {f['pss_mib']:.0f}"

            figures["idle"] = sample()
            print(f"idle: {rss(figures['idle'])} MiB", flush=True)
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                for desc in MODELS:
                    if desc.window or not (repo / desc.id).exists():
                        continue
                    side = SIDES.get(desc.id, 512)
                    buf = io.BytesIO()
                    Image.fromarray(real_photo_crop(side, side)).save(buf, "PNG")
                    t = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")
                    t.set_data_from_numpy(np.array([[buf.getvalue()]], dtype=object))
                    with cf.ThreadPoolExecutor(2) as pool:  # two in flight: both step instances
                        list(pool.map(lambda _: client.infer(desc.id, [t], client_timeout=1800), range(2)))
                    f = {"model": desc.id, "side": side, **sample()}
                    figures["after"].append(f)
                    print(f"after {desc.id} {side}² x 2: {rss(f)} MiB", flush=True)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
