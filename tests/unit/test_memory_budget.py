"""The server-wide memory budget (stylize.engine.memory_budget): reservations shared by processes through a folder,
those of dead processes reclaimed, the measured costs covering the measurement."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from stylize.contract.descriptors import REGISTRY
from stylize.engine.memory_budget import (
    BUDGET_ENV,
    COSTS,
    DIR_ENV,
    WAIT_ENV,
    BudgetBusy,
    BudgetExceeded,
    MemoryBudget,
)

ROOT = Path(__file__).resolve().parents[2]


def test_reservations_add_up_and_are_given_back(tmp_path):
    budget = MemoryBudget(100, tmp_path, wait_s=0)
    with budget.reserve(60, what="a"):
        with budget._locked():
            assert budget.in_use_mib() == 60
        with pytest.raises(BudgetBusy, match="b needs about 50 MiB.*retry later"):
            with budget.reserve(50, what="b"):
                pass
        with budget.reserve(40, what="c"):  # exactly what is left
            with budget._locked():
                assert budget.in_use_mib() == 100
    with budget._locked():
        assert budget.in_use_mib() == 0
    assert not list(tmp_path.glob("*.mib"))


def test_a_request_above_the_whole_budget_is_refused_at_once(tmp_path):
    budget = MemoryBudget(100, tmp_path, wait_s=3600)  # no wait: it could never fit
    with pytest.raises(BudgetExceeded, match="x needs about 101 MiB, more than this server's whole memory budget"):
        with budget.reserve(101, what="x"):
            pass


def test_the_reservation_of_a_killed_process_is_reclaimed(tmp_path):
    """A stub killed while it holds a reservation (an OOM kill) must not keep it."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from stylize.engine.memory_budget import MemoryBudget\n"
            "b = MemoryBudget(100, Path(sys.argv[1]))\n"
            "with b.reserve(90, what='child'):\n"
            "    print('held', flush=True); time.sleep(600)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        budget = MemoryBudget(100, tmp_path, wait_s=0)
        with pytest.raises(BudgetBusy):
            with budget.reserve(20, what="me"):
                pass
        with budget.reserve(10, what="me"):  # what fits beside another process's reservation is admitted
            with budget._locked():
                assert budget.in_use_mib() == 100
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with budget.reserve(20, what="me"):
            with budget._locked():
                assert budget.in_use_mib() == 20
    finally:
        child.kill()
        child.wait()


def test_a_recycled_pid_does_not_keep_an_old_reservation(tmp_path):
    """After a container restart the folder may name a pid that a new process now has: its start time differs."""
    (tmp_path / f"{os.getpid()}-1-1.mib").write_text("90")  # this pid, another start time
    budget = MemoryBudget(100, tmp_path, wait_s=0)
    with budget.reserve(50, what="me"):
        pass
    assert not (tmp_path / f"{os.getpid()}-1-1.mib").exists()


def _worker(directory: str, total: float, mib: float, rounds: int, seen) -> None:
    budget = MemoryBudget(total, Path(directory), wait_s=60)
    for _ in range(rounds):
        with budget.reserve(mib, what="w"):
            with budget._locked():
                seen.put(budget.in_use_mib())


def test_processes_together_never_hold_more_than_the_budget(tmp_path):
    ctx = mp.get_context("spawn")
    seen = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), 100.0, 40.0, 15, seen)) for _ in range(4)]
    for p in procs:
        p.start()
    values = [seen.get(timeout=120) for _ in range(4 * 15)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert max(values) <= 100 and min(values) >= 40


def test_the_budget_is_off_unless_the_environment_sets_it(tmp_path):
    assert MemoryBudget.from_env({}) is None
    budget = MemoryBudget.from_env({BUDGET_ENV: "512", DIR_ENV: str(tmp_path), WAIT_ENV: "2"})
    assert (budget.total_mib, budget.directory, budget.wait_s) == (512.0, tmp_path, 2.0)


def test_every_image_model_has_a_cost_covering_what_was_measured():
    """The costs are the measured lines rounded up: at every measured point the estimate is at least what the image
    step borrowed beyond its network's own growth (k8s/capacity/net-memory.json, written by
    python -m stylize.loadtest.experiments.net_memory)."""
    report = json.loads((ROOT / "k8s" / "capacity" / "net-memory.json").read_text())
    image_models = {d.id for d in REGISTRY.values() if not d.window}
    assert {m["model"] for m in report["models"] if m["step"]} == image_models == set(COSTS)
    for m in report["models"]:
        if not m["step"]:
            continue
        cost, scale = COSTS[m["model"]], REGISTRY[m["model"]].scale
        for p in m["step"]["points"]:
            effective = max(p["output_pixels"], p["pixels"] * scale**2)
            assert cost.image(effective) >= p["borrowed_mib"], (m["model"], p)
            # what the step keeps is its network's own growth, counted apart (keeps_mib), never above its largest call
            assert p["network_growth_mib"] <= m["step_network_growth_mib"] + 1, (m["model"], p)
