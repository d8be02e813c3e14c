"""CI's load test: the quick scenario set, through `stylize loadtest`, with the real perf_analyzer against the real
server (session fixture). Asserts the tooling works end to end and nothing failed -- not speed (timed numbers on a
shared CI machine are for the report, not for assertions)."""

from __future__ import annotations

import json

import pytest
from stylize.cli import main
from stylize.loadtest import QUICK_SET, load_all, scenarios_dir

pytestmark = [pytest.mark.loadtest, pytest.mark.triton]


@pytest.mark.slow
def test_quick_set_runs_without_errors(server, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("STYLIZE_ADMIN_KEY", server.admin_key)  # perf_analyzer reads model configs, an admin API
    code = main(
        [
            "loadtest",
            "--quick",
            "--url",
            server.grpc_url,
            "--http-url",
            server.http_url,
            "-o",
            str(out),
            "--report-dir",
            str(tmp_path / "published"),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err

    results = json.loads((out / "results.json").read_text())
    assert results["format"] == "stylize-loadtest/1"
    assert results["versions"]["triton"] == "2.51.0"
    quick = load_all(scenarios_dir())[QUICK_SET].scenarios
    assert [r["scenario"]["name"] for r in results["results"]] == [sc.name for sc in quick]
    for r, sc in zip(results["results"], quick):
        assert r["error"] is None
        statuses = [lv["status"] for lv in r["levels"]]
        assert "error" not in statuses, r["levels"]
        assert len(statuses) == len(sc.levels) and "ok" in statuses  # measured, not only attempted
        for lv in r["levels"]:
            if lv["status"] == "ok":
                assert lv["infer_per_s"] > 0 and lv["p95_ms"] >= lv["p50_ms"] > 0
                # (no cache_hits check: this server runs without a response cache, so it could not fail)
    ensemble = results["results"][0]
    assert ensemble["bls_models"] or ensemble["levels"][0]["composing"]  # the network's share is reported

    report = (out / "report.md").read_text()
    assert "## Errors\n\nNone." in report and "perf_analyzer 2.51.0" in report
    assert (out / "plots" / "throughput_latency.png").stat().st_size > 5000
    assert (tmp_path / "published" / "report.md").is_file()
    assert list((out / "raw").glob("*.csv")) and list((out / "raw").glob("*.input.json"))
