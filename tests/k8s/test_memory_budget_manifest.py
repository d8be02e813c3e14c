"""The CPU pod's memory limit holds its worst case under the limits (issue 13 #4): the idle server + what every stub
keeps + the image steps' memory budget + /dev/shm + the response cache, each term from a committed measurement or
the manifests (python -m stylize_k8s.memory_budget)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from stylize.engine.memory_budget import BUDGET_ENV
from stylize_k8s import memory_budget


def test_the_cpu_pod_holds_its_worst_case():
    w = memory_budget.worst_case()
    assert memory_budget.problems(w) == []
    assert w.limit_mib >= w.total_mib * (1 + memory_budget.MARGIN)
    # every term is there and measured (none left at zero by a missing file or key)
    assert min(w.idle_mib, w.keeps_mib, w.budget_mib, w.shm_mib, w.cache_mib) > 0
    out = subprocess.run([sys.executable, "-m", "stylize_k8s.memory_budget", "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "worst case" in out.stdout and "CPU pod memory limit" in out.stdout


def test_a_limit_below_the_worst_case_is_named(monkeypatch, tmp_path):
    text = memory_budget.CPU_RESOURCES.read_text()
    w = memory_budget.worst_case()
    low = int(w.total_mib) // 1024  # GiB, below the sum
    lowered = tmp_path / "resources.yaml"
    lowered.write_text(text.replace(f"memory: {_limit_text(text)}", f"memory: {low}Gi"))
    monkeypatch.setattr(memory_budget, "CPU_RESOURCES", lowered)
    found = memory_budget.problems(memory_budget.worst_case())
    assert len(found) == 1 and "is below the worst case" in found[0] and "the budget it would hold" in found[0]


def test_without_a_budget_there_is_no_worst_case_to_hold(monkeypatch, tmp_path):
    text = memory_budget.CPU_RESOURCES.read_text()
    assert BUDGET_ENV in text
    unset = tmp_path / "resources.yaml"
    unset.write_text(text.replace(BUDGET_ENV, "SOMETHING_ELSE"))
    monkeypatch.setattr(memory_budget, "CPU_RESOURCES", unset)
    with pytest.raises(SystemExit, match="sets no STYLIZE_MEMORY_BUDGET_MIB"):
        memory_budget.worst_case()


def _limit_text(text: str) -> str:
    import yaml

    doc = yaml.safe_load(text)
    (c,) = [c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"]
    return c["resources"]["limits"]["memory"]
