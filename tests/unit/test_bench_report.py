"""The benchmark's arithmetic and its doc: ratios within rounds, target verdicts, INT8 quality wording, FLOP count
of a real network graph, the GEMM peak (tiny size)."""

from __future__ import annotations

import pytest
from stylize.loadtest.bench import BenchResult, Breakdown, CaseResult, LayoutResult, RunnerResult
from stylize.loadtest.bench_report import load_json, markdown, plot, save_json

pytestmark = pytest.mark.unit


def _case(
    model: str, *, served: list[float], ort: list[float], int8: list[float] | None = None, quality: dict | None = None
) -> CaseResult:
    runners = {
        "ort": RunnerResult("ort", "ORT", ort),
        "served": RunnerResult("served", "served", served),
        "torch": RunnerResult("torch", "torch", [3 * t for t in ort]),
    }
    if int8:
        runners["served_int8"] = RunnerResult("served_int8", "int8", int8)
    return CaseResult(
        model=model,
        side=128,
        weights="real",
        gflop_per_image=20.0,
        images_per_round=4,
        runners=runners,
        int8_quality=quality,
        breakdown={"served": Breakdown(500.0, 50.0, 400.0, 50.0, f"{model}_image", f"{model}_net")},
    )


def _result(cases: list[CaseResult]) -> BenchResult:
    return BenchResult(
        started="2026-11-22T00:00:00Z",
        command="stylize bench",
        settings={
            "photo": "astronaut.png",
            "rounds": 3,
            "threads": 2,
            "in_flight": 2,
            "seconds_per_round": 2.0,
            "max_images": 8,
        },
        machine={"cpu": "cpu", "cores": 2, "memory_gib": 24.0, "os": "linux"},
        versions={"torch": "2.13", "onnxruntime": "1.31.1", "numpy": "1.26.4", "python": "3.11", "stylize": "x"},
        peak={"ort_fp32_gflops": 100.0, "numpy_fp32_gflops": 50.0, "ort_int8_gops": 500.0, "n": 2048, "threads": 2},
        layout={"triton": "2.51.0", "animevideo_x4_net": {"kind": "onnxruntime", "instances": 1, "threads": 2}},
        cases=cases,
        server="local",
        seconds=600.0,
        layouts=[LayoutResult("animevideo_x4", 128, 4, {"1 x 2": [0.5, 0.5, 0.5], "2 x 1": [0.4, 0.5, 0.25]})],
    )


def test_ratios_are_taken_within_rounds():
    # round 2 is slow for everyone (a noisy neighbour): the within-round ratio does not move
    c = _case("animevideo_x4", served=[1.0, 3.0, 1.1], ort=[0.9, 2.7, 0.99])
    med, lo, hi = c.ratio("served", "ort")
    assert med == pytest.approx(0.9) and lo == pytest.approx(0.9) and hi == pytest.approx(0.9)
    assert c.ratio("served", "missing") is None
    assert c.gflops("ort") == pytest.approx(20.0 / 0.9)  # the fastest round
    # the headline compares each runner's fastest round
    assert c.best_ratio("served", "ort") == pytest.approx(0.9 / 1.0)


def test_doc_states_targets_met_and_missed(tmp_path):
    good_q = {
        "meaningful": True,
        "loss_db": 0.12,
        "fidelity_psnr_db": 38.0,
        "fp32_psnr_db": 25.0,
        "int8_psnr_db": 24.88,
        "weights": "real",
        "max_abs_diff": 20,
        "note": "",
    }
    junk_q = {
        "meaningful": False,
        "loss_db": None,
        "fidelity_psnr_db": 36.0,
        "weights": "untrained",
        "note": "untrained: meaningless",
    }
    cases = [
        _case("esrgan_x4", served=[1.0] * 3, ort=[0.96] * 3, int8=[0.3] * 3, quality=good_q),  # 0.96x, 3.3x
        _case("animevideo_x4", served=[1.0] * 3, ort=[0.8] * 3, int8=[0.5] * 3, quality=good_q),  # 0.8x, 2x
        _case("animeganv2", served=[1.0] * 3, ort=[1.0] * 3, int8=[0.3] * 3, quality=junk_q),
    ]
    md = markdown(_result(cases), plot(_result(cases), tmp_path / "p"), doc_dir=tmp_path, results_file=None)
    targets = md.split("## Targets")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in targets.splitlines() if line.startswith("| ") and "²" in line}
    assert "**meets**" in rows["esrgan_x4 128²"].split("|")[4]
    assert "**misses** by 11 %" in rows["animevideo_x4 128²"]  # 0.80 vs 0.90
    assert "**2.00** (rounds 2.00, 2.00–2.00) **misses** by 20 %" in rows["animevideo_x4 128²"]
    assert "meaningless: untrained weights" in rows["animeganv2 128²"] and "(speed only)" in rows["animeganv2 128²"]
    # layouts: fastest rounds 0.5 s vs 0.25 s -> 2.00; within rounds 1.25, 1.00-2.00
    assert "| animevideo_x4 128² | 2 | 4 | **2.00** (rounds 1.25 (1.00–2.00)) |" in md
    assert "no GPU here, so no GPU numbers" in md
    assert (tmp_path / "p" / "ratios.png").stat().st_size > 5000


def test_json_round_trip(tmp_path):
    r = _result([_case("esrgan_x4", served=[1.0] * 3, ort=[0.96] * 3)])
    again = load_json(save_json(r, tmp_path / "b.json"))
    assert again.cases[0].ratio("served", "ort") == r.cases[0].ratio("served", "ort")
    assert again.layouts[0].ratio("2 x 1", "1 x 2") == r.layouts[0].ratio("2 x 1", "1 x 2")
    assert again.cases[0].best_ratio("served", "ort") == r.cases[0].best_ratio("served", "ort")
    assert markdown(again, [], doc_dir=tmp_path, results_file=None) == markdown(
        r, [], doc_dir=tmp_path, results_file=None
    )


def test_gemm_peak_small():
    from stylize.loadtest.flops import machine_peak

    p = machine_peak(n=128, threads=1, reps=1)
    assert p.ort_fp32_gflops > 0 and p.ort_int8_gops > 0 and p.numpy_fp32_gflops > 0
    assert p.ov_fp32_gflops > 0 and p.ov_int8_gops > 0  # bf16: only where the CPU has it (None otherwise)


def test_a_missed_eager_target_is_explained_against_the_gemm_peak(tmp_path):
    c = _case("esrgan_anime_x4", served=[0.25] * 3, ort=[0.24] * 3)
    c.runners["torch"] = RunnerResult("torch", "torch", [0.25] * 3)  # eager as fast as served: 20 GFLOP / 0.25 s
    md = markdown(_result([c]), [], doc_dir=tmp_path, results_file=None)
    line = next(x for x in md.splitlines() if "served / PyTorch eager 1.00 < 1.5" in x)
    # 80 GFLOP/s of a 100 GFLOP/s peak: 1.5x would be 120 % of the peak
    assert "80 GFLOP/s, 80 % of this run's fp32 GEMM peak" in line and "120 % of the peak in fp32 (beyond" in line


def _bench_args(*argv):
    import argparse

    from stylize.commands import bench as bench_command

    parser = argparse.ArgumentParser()
    bench_command.register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_quick_means_exactly_two_rounds_and_the_tracked_doc_is_written_only_when_asked():
    from pathlib import Path

    from stylize.commands.bench import DEFAULT_DOC, doc_path, settings_from_args

    quick = settings_from_args(_bench_args("--quick"))
    assert quick.rounds == quick.max_rounds == 2
    assert settings_from_args(_bench_args("--rounds", "4")).max_rounds == 4
    full = settings_from_args(_bench_args())
    assert full.rounds == 3 and full.max_rounds > full.rounds  # the full run adds rounds while time is left
    report = doc_path(_bench_args("--quick"))
    assert report.parts[:2] == ("loadtest", "results") and report.name == "performance.md"
    assert doc_path(_bench_args("--update-docs")) == DEFAULT_DOC == Path("docs/performance.md")


def test_openvino_section_states_its_targets_and_replaces_only_itself(tmp_path):
    """The OpenVINO targets against served ONNX Runtime fp32 and in-process OpenVINO in the served layout, % of the
    fp32 / bf16 / int8 peaks, the reason for a miss from the run's own numbers; a reduced run rewrites only its
    section of a doc that holds a full run's tables."""
    from stylize.loadtest.bench_report import OV_SECTION, openvino_section, write_section

    c = _case("animevideo_x4", served=[0.4] * 2, ort=[1.0] * 2, int8=[0.25] * 2)
    c.runners |= {
        "served_ort": RunnerResult("served_ort", "ort served", [1.0] * 2),
        "ov": RunnerResult("ov", "ov", [0.9] * 2),
        "ov_streams": RunnerResult("ov_streams", "ov", [0.45] * 2),
        "ov_bf16": RunnerResult("ov_bf16", "bf16", [], error="BenchError: runs fp32 on this CPU"),
    }
    c.served_layout = {"runtime": "openvino", "precision": "fp32", "instances": 2, "threads": 1}
    c.int8_served_quality = {
        "loss_db": 0.11,
        "fidelity_psnr_db": 38.3,
        "runtime": "openvino",
        "precision": "fp32",
        "meaningful": True,
    }
    r = _result([c])
    r.peak |= {"ov_fp32_gflops": 120.0, "ov_bf16_gflops": None, "ov_int8_gops": 300.0}
    r.versions |= {"openvino": "2026.4.1", "openvino_capabilities": ["FP32", "INT8"]}
    text = "\n".join(openvino_section(r))
    row = next(line for line in text.splitlines() if line.startswith("| animevideo_x4 128²") and "meets" in line)
    cells = [x.strip() for x in row.split("|")]
    assert cells[2].startswith("**2.50**") and cells[3] == "**meets**"  # served / served ORT: 1.0 / 0.4
    assert cells[4].startswith("**1.12**") and cells[5] == "**meets**"  # served / in-process served layout
    assert cells[6].startswith("**4.00**") and cells[7] == "**meets**" and "0.11 dB" in cells[8]
    assert "bf16 **none**" in text and "fp32 **120 GFLOP/s**" in text and "int8 **500 GOP/s**" in text
    assert "% fp32" in text and "% int8" in text and "% bf16" not in text  # no bf16 peak on this CPU
    assert "ov_bf16: BenchError" in text
    slow = _case("animevideo_x4", served=[0.8] * 2, ort=[1.0] * 2)
    slow.runners |= {
        "served_ort": RunnerResult("served_ort", "ort served", [1.0] * 2),
        "ov": RunnerResult("ov", "ov", [0.85] * 2),
    }
    slow.served_layout = c.served_layout
    miss = _result([slow])
    miss.versions |= {"openvino_capabilities": ["FP32", "INT8"]}
    why = "\n".join(openvino_section(miss))
    assert "**misses**" in why and "no native bf16" in why and "OpenVINO f32 / ONNX Runtime fp32 is 1.18" in why
    doc = tmp_path / "performance.md"
    doc.write_text("# full run\n\nthe ONNX Runtime tables\n")
    write_section(r, doc)
    write_section(miss, doc)  # again: replaced, not appended twice
    body = doc.read_text()
    assert body.startswith("# full run\n\nthe ONNX Runtime tables\n") and body.count(OV_SECTION[0]) == 1
    assert "no native bf16" in body


def test_a_full_regeneration_keeps_the_hand_kept_part(tmp_path):
    from stylize.loadtest.bench_report import KEPT, write

    doc = tmp_path / "performance.md"
    doc.write_text(f"# old tables\n\n{KEPT[0]}\nstart-up: 38.9 s cold\n{KEPT[1]}\n")
    r = _result([_case("esrgan_x4", served=[1.0] * 3, ort=[0.96] * 3)])
    write(r, doc)
    body = doc.read_text()
    assert "# old tables" not in body and body.count("start-up: 38.9 s cold") == 1 and "## Targets" in body
