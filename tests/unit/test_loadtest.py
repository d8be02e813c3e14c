"""Load-test tooling without a server: the scenario files, perf_analyzer's input data, reading real perf_analyzer
output (captured from a run against the real server: tests/loadtest/data), the report, and the capacity file as
the k8s capacity plan reads it."""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stylize.contract.descriptors import REGISTRY
from stylize.loadtest import CapacityError, ScenarioError, capacity_document, load_all, load_set, scenarios_dir, select
from stylize.loadtest.perf import Level, command, input_data, parse_level, parse_stdout
from stylize.loadtest.report import markdown, plot
from stylize.loadtest.runner import ModelLayout, RunResult, ScenarioResult
from stylize.loadtest.scenarios import CapacitySpec, ScenarioSet

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "loadtest" / "data"


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- scenario files ---------------------------------------------------------------------------------------------


def test_every_shipped_scenario_file_is_valid():
    sets = load_all(scenarios_dir())
    assert "quick" in sets
    names = [sc.name for s in sets.values() for sc in s.scenarios]
    assert len(names) == len(set(names))
    for s in sets.values():
        for sc in s.scenarios:
            d = REGISTRY[sc.model]
            assert sc.triton_model in (d.id, d.net_model, d.int8_ensemble, d.int8_model)
    # CI's set stays small: light models and few levels
    quick = sets["quick"].scenarios
    assert sum(len(sc.levels) for sc in quick) <= 6
    assert all(sc.variant in ("ensemble", "net") for sc in quick)  # no INT8 build needed in CI


def test_capacity_set_covers_the_client_facing_image_models():
    sets = load_all(scenarios_dir())
    cap = sets["capacity"]
    assert cap.capacity is not None
    assert {sc.model for sc in cap.scenarios} == {m for m, d in REGISTRY.items() if not d.window}
    assert all(sc.variant == "ensemble" and sc.mode == "concurrency" for sc in cap.scenarios)


def test_names_derive_from_descriptors(tmp_path):
    s = load_set(
        _write(
            tmp_path,
            """
[[scenario]]
name = "a"
model = "esrgan_anime_x4"
variant = "int8"
input = { size = [48, 64] }
concurrency = [1, 2]
""",
        )
    )
    sc = s.scenarios[0]
    assert sc.triton_model == REGISTRY["esrgan_anime_x4"].int8_ensemble
    assert sc.input.size == (48, 64) and sc.is_ensemble and sc.input_label == "48x64 PNG"


@pytest.mark.parametrize(
    "body,message",
    [
        ('name = "a"\nmodel = "nope"\nvariant = "net"\ninput = { size = 32 }\nconcurrency = [1]', "unknown model"),
        ('name = "a"\nmodel = "animevideo_x4"\nvariant = "gpu"\ninput = { size = 32 }\nconcurrency = [1]', "variant"),
        ('name = "a"\nmodel = "animevideo_x4"\nvariant = "net"\ninput = { size = 32 }', "exactly one of"),
        (
            'name = "a"\nmodel = "animevideo_x4"\nvariant = "net"\ninput = { size = 32 }\nconcurrency = [1]\n'
            "request_rate = [1.0]",
            "exactly one of",
        ),
        (
            'name = "a"\nmodel = "animevideo_x4"\nvariant = "ensemble"\ninput = { size = 32 }\nconcurrency = [1]\nbatch = 2',
            "batch = 1",
        ),
        (
            'name = "a"\nmodel = "basicvsr_x4"\nvariant = "int8_net"\ninput = { size = 32 }\nconcurrency = [1]',
            "no INT8",
        ),
        (
            'name = "a"\nmodel = "animeganv2"\nvariant = "net"\ninput = { size = 30 }\nconcurrency = [1]',
            "multiples of 4",
        ),
        (
            'name = "a"\nmodel = "animevideo_x4"\nvariant = "net"\ninput = { size = 32 }\nconcurrency = [1]\ncolour = 1',
            "unknown field",
        ),
    ],
)
def test_bad_scenarios_say_why(tmp_path, body, message):
    with pytest.raises(ScenarioError, match=message):
        load_set(_write(tmp_path, "[[scenario]]\n" + body + "\n"))


def test_select_by_set_or_name_and_refuse_unknown():
    sets = load_all(scenarios_dir())
    quick = select(sets, ["quick"])
    first = quick[0].name
    assert select(sets, [first, "quick"]) == [quick[0], *quick[1:]]  # no duplicates, order kept
    with pytest.raises(ScenarioError, match="no scenario or set"):
        select(sets, ["does-not-exist"])


def test_duplicate_names_across_sets_are_refused(tmp_path):
    body = (
        '[[scenario]]\nname = "same"\nmodel = "animevideo_x4"\nvariant = "net"\ninput = { size = 32 }\n'
        "concurrency = [1]\n"
    )
    _write(tmp_path, body, "a.toml")
    _write(tmp_path, body, "b.toml")
    with pytest.raises(ScenarioError, match="both"):
        load_all(tmp_path)


# ---- input data ---------------------------------------------------------------------------------------------------


def test_ensemble_input_is_a_length_prefixed_encoded_photo(tmp_path):
    s = load_set(
        _write(
            tmp_path,
            """
[[scenario]]
name = "a"
model = "animevideo_x4"
variant = "ensemble"
input = { size = 40, format = "JPEG", photos = ["chelsea.png", "coffee.png"], crops = 2 }
concurrency = [1]
""",
        )
    )
    doc = input_data(s.scenarios[0])
    assert len(doc["data"]) == 4
    raw = base64.b64decode(doc["data"][0]["IMAGE_BYTES"]["b64"])
    (length,) = struct.unpack("<I", raw[:4])
    assert length == len(raw) - 4  # Triton's raw BYTES element: uint32 length + bytes
    with Image.open(io.BytesIO(raw[4:])) as im:
        assert im.format == "JPEG" and im.size == (40, 40)
    assert doc["data"][0]["IMAGE_BYTES"]["shape"] == [1]
    assert input_data(s.scenarios[0]) == doc  # seeded: the same crops every run


def test_network_input_is_raw_frames_with_shape(tmp_path):
    s = load_set(
        _write(
            tmp_path,
            """
[[scenario]]
name = "n"
model = "basicvsr_x4"
variant = "net"
input = { size = 32 }
concurrency = [1]
""",
        )
    )
    entry = input_data(s.scenarios[0])["data"][0]["FRAMES"]
    window = REGISTRY["basicvsr_x4"].window
    assert entry["shape"] == [window, 32, 32, 3]
    frames = np.frombuffer(base64.b64decode(entry["b64"]), np.uint8).reshape(entry["shape"])
    assert frames.std() > 10  # a real photo, not zeros


def test_a_batch_to_a_network_that_does_not_batch_is_stacked_and_sent_as_one(tmp_path):
    """OpenVINO networks have max_batch_size 0 (their first dim is the batch): a batch-2 scenario sends 2 stacked
    crops per request with -b 1 and still reports images per second."""
    s = load_set(
        _write(
            tmp_path,
            """
[[scenario]]
name = "b2"
model = "animevideo_x4"
variant = "net"
batch = 2
input = { size = 24, photos = ["chelsea.png", "coffee.png"], crops = 2 }
concurrency = [1]
""",
        )
    )
    sc = s.scenarios[0]
    plain, stacked = input_data(sc)["data"], input_data(sc, stacked=True)["data"]
    assert [e["FRAME"]["shape"] for e in plain] == [[24, 24, 3]] * 4
    assert [e["FRAME"]["shape"] for e in stacked] == [[2, 24, 24, 3]] * 4
    first = np.frombuffer(base64.b64decode(stacked[0]["FRAME"]["b64"]), np.uint8).reshape(2, 24, 24, 3)
    assert np.array_equal(
        first[1], np.frombuffer(base64.b64decode(plain[1]["FRAME"]["b64"]), np.uint8).reshape(24, 24, 3)
    )  # the next crop, not a copy of the first
    cmd = command(
        Path("/pa"), sc, 1, url="h:1", data_file=tmp_path / "d.json", csv_file=tmp_path / "o.csv", stacked=True
    )
    assert cmd[cmd.index("-b") + 1] == "1"


def test_command_line(tmp_path):
    sc = select(load_all(scenarios_dir()), ["quick"])[0]
    cmd = command(
        Path("/pa"), sc, 2, url="h:1", data_file=tmp_path / "d.json", csv_file=tmp_path / "o.csv", bls_models=["x_net"]
    )
    assert cmd[:5] == ["/pa", "-m", sc.triton_model, "-u", "h:1"]
    assert "--concurrency-range" in cmd and cmd[cmd.index("--concurrency-range") + 1] == "2:2"
    assert cmd[cmd.index("--bls-composing-models") + 1] == "x_net"
    assert cmd[cmd.index("-i") + 1] == "grpc" and "-H" not in cmd
    # a server whose model config needs the admin key: over HTTP with the header (perf_analyzer sends -H on HTTP
    # only), and the key stays out of the logs
    from stylize.contract import access
    from stylize.loadtest.perf import _shown

    key = "k" * 32
    cmd = command(
        Path("/pa"),
        sc,
        2,
        url="h:2",
        data_file=tmp_path / "d.json",
        csv_file=tmp_path / "o.csv",
        headers=access.http_headers(key),
    )
    assert cmd[cmd.index("-i") + 1] == "http" and cmd[cmd.index("-H") + 1] == f"{access.ADMIN_HEADER}:{key}"
    assert key not in _shown(cmd, access.http_headers(key))


# ---- perf_analyzer output (real, captured) -----------------------------------------------------------------------


def _level(stem: str, value: float = 1, batch: int = 1) -> Level:
    text = (DATA / f"{stem}.stdout.txt").read_text()
    return parse_level(value, batch, 0, text, DATA / f"{stem}.csv")


def test_parse_an_ensemble_level_with_its_bls_network():
    lv = _level("quick_animevideo_x4_png64_c1")
    assert lv.ok and lv.infer_per_s == pytest.approx(3.69854)
    assert lv.p50_ms == pytest.approx(284.335) and lv.p95_ms == pytest.approx(331.612)
    assert set(lv.composing) == {"animevideo_x4_image", "animevideo_x4_net"}
    net = lv.composing["animevideo_x4_net"]
    assert net.compute_us > 100_000 and net.queue_us >= 0
    assert lv.queue_us == pytest.approx(sum(m.queue_us for m in lv.composing.values()))
    assert 0 < lv.busy_us <= lv.server.request_us


def test_in_step_network_is_neither_a_bls_callee_nor_split_from_its_step(tmp_path):
    """A CPU image step runs the network in its own process: perf_analyzer is not told about a BLS network, and the
    breakdown reports the step and its network as one compute (they cannot be separated from outside)."""
    import copy

    from stylize.loadtest.runner import IN_STEP_NETWORK, bls_callees

    run, _ = _run_result(tmp_path)
    res = run.results[0]
    sc = res.scenario
    d = sc.descriptor
    ens = ModelLayout(sc.triton_model, "ensemble", 0, None, steps=[d.image_model])
    bls_step = ModelLayout(d.image_model, "python", 2, 1, net_runtime="triton")
    in_step = ModelLayout(d.image_model, "python", 2, 1, net_runtime="onnxruntime")
    assert bls_callees(sc, {sc.triton_model: ens, d.image_model: bls_step}) == [d.net_model]
    assert bls_callees(sc, {sc.triton_model: ens, d.image_model: in_step}) == []
    lv = copy.deepcopy(res.levels[0])
    step_compute = lv.composing[d.image_model].compute_us / 1000
    del lv.composing[d.net_model]
    b = ScenarioResult(sc, [lv]).breakdown(lv)
    assert b[IN_STEP_NETWORK] == pytest.approx(step_compute) and "network" not in b and "python steps" not in b


def test_parse_a_batched_network_level():
    lv = _level("quick_animevideo_x4_net64_b2_c1", batch=2)
    assert lv.ok and lv.requests_per_s == pytest.approx(lv.infer_per_s / 2)
    assert lv.server.queue_us == 2693 and lv.server.compute_us == 39 + 268718 + 1214
    assert not lv.composing


def test_unstable_and_failed_runs(tmp_path):
    text = (DATA / "unstable_rate.stdout.txt").read_text()
    lv = parse_level(2.0, 1, 2, text, tmp_path / "missing.csv")
    assert lv.status == "unstable"
    bad = parse_level(1, 1, 99, "Thread [0] had error: in ensemble 'x', unexpected shape\n", tmp_path / "no.csv")
    assert bad.status == "error" and "unexpected shape" in bad.message


def test_parse_stdout_without_server_block():
    assert parse_stdout("nothing useful") == (None, {}, 0)


# ---- report and capacity ------------------------------------------------------------------------------------------


def _run_result(tmp_path: Path) -> tuple[RunResult, ScenarioSet]:
    path = _write(
        tmp_path,
        """
[capacity]
slo_latency_ms = 1000
[[scenario]]
name = "cap_animevideo_x4"
model = "animevideo_x4"
variant = "ensemble"
input = { size = 64 }
concurrency = [1, 2]
slo_p95_ms = 300
""",
        "cap.toml",
    )
    s = load_set(path)
    sc = s.scenarios[0]
    lv1 = _level("quick_animevideo_x4_png64_c1", 1)
    lv2 = _level("quick_animevideo_x4_png64_c1", 2)
    lv2.infer_per_s, lv2.requests_per_s, lv2.p50_ms, lv2.p95_ms = 6.6, 6.6, 290.0, 480.0
    res = ScenarioResult(sc, [lv1, lv2], bls_models=["animevideo_x4_net"])
    run = RunResult(
        started="2026-11-22T00:00:00Z",
        url="127.0.0.1:1",
        command="stylize loadtest cap",
        machine={
            "cpu": "test cpu",
            "cores": 2,
            "memory_gib": 24.0,
            "kernel": "k",
            "os": "linux",
            "python": "3.11",
            "hostname": "h",
        },
        versions={
            "triton": "2.51.0",
            "perf_analyzer": "perf_analyzer 2.51.0",
            "tritonclient": "2.51.0",
            "stylize": "abc",
        },
        layouts={"animevideo_x4_net": ModelLayout("animevideo_x4_net", "onnxruntime", 1, 2)},
        results=[res],
        load_average={"before": [1.0, 1.0, 1.0], "after": [2.0, 1.0, 1.0]},
        startup_s=42.0,
    )
    return run, s


def test_slo_verdicts_and_breakdown(tmp_path):
    run, _ = _run_result(tmp_path)
    r = run.results[0]
    assert r.slo_verdict() == "fail"  # p95 332 and 480 ms > 300 ms
    r.scenario = r.scenario.__class__(**{**r.scenario.__dict__, "slo_p95_ms": 400.0})
    assert r.slo_verdict() == "partial (up to concurrency 1)"
    b = r.breakdown(r.levels[0])
    assert b["network"] > b["python steps"] > 0 and b["transport"] > 0
    assert sum(b.values()) == pytest.approx(r.levels[0].p50_ms, rel=0.35)  # adds up to about a request's latency


def test_report_and_plots(tmp_path):
    run, _ = _run_result(tmp_path)
    plots = plot(run, tmp_path / "plots")
    assert {p.name for p in plots} == {"throughput_latency.png", "latency_percentiles.png", "time_breakdown.png"}
    assert all(p.stat().st_size > 5000 for p in plots)
    md = markdown(run, plots, relative_to=tmp_path)
    assert "| cap_animevideo_x4 | animevideo_x4 | 64x64 PNG | 2/2 ok |" in md
    assert "Server start-up" in md and "![time_breakdown](plots/time_breakdown.png)" in md
    assert "perf_analyzer 2.51.0" in md and "## Errors\n\nNone." in md


def test_capacity_file_is_what_the_k8s_plan_reads(tmp_path):
    run, s = _run_result(tmp_path)
    doc = capacity_document(run, s)
    path = tmp_path / "capacity.json"
    path.write_text(json.dumps(doc))
    from stylize.loadtest.capacity import load_results  # the reader stylize_k8s.plan and .simulate use

    results = load_results(path, known_models=REGISTRY)
    m = results.models["animevideo_x4"]
    assert [p.concurrency for p in m.points] == [1, 2]
    assert m.saturation_rps == pytest.approx(6.6) and results.startup_s == 42.0
    assert m.points[0].queue_us is not None and m.points[0].compute_us > 0

    run.startup_s = None
    with pytest.raises(CapacityError, match="start-up"):
        capacity_document(run, s)
    with pytest.raises(CapacityError, match="no \\[capacity\\]"):
        capacity_document(run, ScenarioSet("x", s.path, "", s.scenarios, None))
    run.startup_s = 1.0
    run.results[0].levels = []
    with pytest.raises(CapacityError, match="no successful level"):
        capacity_document(run, s)
    assert CapacitySpec(1000.0).percentile == 95


def test_results_json_round_trip_re_renders_the_same_report(tmp_path):
    from stylize.loadtest.runner import load_results

    run, _ = _run_result(tmp_path)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(run.to_dict()))
    again = load_results(path)
    assert again.results[0].scenario == run.results[0].scenario
    assert markdown(again, [], relative_to=tmp_path) == markdown(run, [], relative_to=tmp_path)
