"""Load tests with perf_analyzer: scenarios (data files in loadtest/scenarios/), runs, reports, capacity input.

    from stylize.loadtest import load_all, select, run, write_report
    sets = load_all(scenarios_dir())
    result = run(select(sets, ["quick"]), url="localhost:8001", out_dir=Path("loadtest/results/x"))
    write_report(result, Path("loadtest/results/x"))

`stylize loadtest` is the command line on top (stylize/commands/loadtest.py). No torch here.
"""

from __future__ import annotations

import os
from pathlib import Path

from .capacity import CapacityError, capacity_document
from .perf import PerfAnalyzerUnavailable, find_perf_analyzer, perf_analyzer_version
from .report import write_report
from .runner import RunResult, ScenarioResult, ServerNotReady, run
from .scenarios import Scenario, ScenarioError, ScenarioSet, load_all, load_set, select

SCENARIOS_ENV = "STYLIZE_LOADTEST_SCENARIOS"
QUICK_SET = "quick"


def project_root() -> Path | None:
    """The source checkout (the folder with pyproject.toml and loadtest/) when stylize runs from it."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "loadtest").is_dir() else None


def scenarios_dir() -> Path:
    """``$STYLIZE_LOADTEST_SCENARIOS``, else ``loadtest/scenarios`` of the source checkout, else of the current
    folder."""
    if os.environ.get(SCENARIOS_ENV):
        return Path(os.environ[SCENARIOS_ENV])
    root = project_root()
    return (root or Path.cwd()) / "loadtest" / "scenarios"


def results_dir() -> Path:
    root = project_root()
    return (root or Path.cwd()) / "loadtest" / "results"


__all__ = [
    "SCENARIOS_ENV",
    "QUICK_SET",
    "project_root",
    "scenarios_dir",
    "results_dir",
    "PerfAnalyzerUnavailable",
    "find_perf_analyzer",
    "perf_analyzer_version",
    "write_report",
    "CapacityError",
    "RunResult",
    "ScenarioResult",
    "ServerNotReady",
    "capacity_document",
    "run",
    "Scenario",
    "ScenarioError",
    "ScenarioSet",
    "load_all",
    "load_set",
    "select",
]
