import json
import subprocess
import sys

import pytest
from runtime_fixtures import colour_images, tiny_bundle

from device.sorting.bench import floor_sweep

pytest.importorskip("onnxruntime")


def edgesort(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_bench_model_times_every_present_backend_and_says_why_others_are_skipped(tmp_path):
    b = tiny_bundle(tmp_path)
    out = tmp_path / "model.json"
    r = edgesort(
        "bench",
        "model",
        str(b.root),
        "--batch",
        "1",
        "4",
        "--iters",
        "5",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    rows = {(x["backend"], x["batch"]): x for x in doc["results"]}
    assert {("onnxruntime", 1), ("onnxruntime", 4)} <= set(rows)
    assert all(x["median_ms"] <= x["p99_ms"] and x["n"] == 5 for x in rows.values())
    assert "tensorrt" in doc["skipped"]  # absent here; the reason is recorded, not hidden


def test_bench_pipeline_compares_bare_and_pipelined_runs_on_the_same_frames(tmp_path):
    b = tiny_bundle(tmp_path)
    colour_images(tmp_path / "imgs", 6)
    out = tmp_path / "pipe.json"
    r = edgesort(
        "bench",
        "pipeline",
        str(b.root),
        "--source",
        f"{tmp_path / 'imgs'}?fps=0",
        "--json",
        str(out),
        "--seconds",
        "1",
        "--rounds",
        "2",
        "--bare-seconds",
        "0.3",
        "--threads",
        "1",
        "--switch-interval",
        "0.001",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["switch_interval_s"] == 0.001
    if doc["cpu_percent"]:  # Linux: the machine's CPU time over the run, steal included
        assert abs(sum(doc["cpu_percent"].values()) - 100.0) < 1.0 and "steal" in doc["cpu_percent"]
    before, after = doc["thread_handoff_us"]
    assert 0 < before["p50"] <= before["p99"] and 0 < after["p50"] <= after["p99"]
    assert doc["context_switches_per_frame"] >= 0
    assert doc["frames"] == 6 and len(doc["efficiency_per_round"]) == 2 and len(doc["bare_fps_runs"]) == 3
    assert doc["pipeline_fps"] > 0 and doc["bare_fps"] > 0 and doc["efficiency"] > 0
    assert doc["pipeline"]["errors"] == 0 and doc["pipeline"]["frames_out"] > 0
    assert doc["memory"]["peak_mb"] > 0 and doc["memory"]["samples"] >= 1
    assert out.with_suffix(".png").is_file()


def test_bench_delegates_lazily_and_names_a_missing_module():
    for name, module in (
        ("outbox", "device.fleet.bench"),
        ("bridge", "firmware_bridge.bench"),
        ("sort", "device.sorting.bench"),
    ):
        r = edgesort("bench", name, "--help")
        if r.returncode == 0:
            assert f"usage: edgesort bench {name}" in r.stdout
        else:
            assert f"this benchmark needs {module}" in r.stderr and "Traceback" not in r.stderr
    r = edgesort("--help")
    assert r.returncode == 0 and "bench" in r.stdout


def test_bench_sort_writes_a_row_per_run_and_each_runs_whole_report(tmp_path):
    out = tmp_path / "sort.json"
    r = edgesort("bench", "sort", "--mcu", "python", "--speeds", "1.5", "--rates", "8", "--faults", "",
                 "--seconds", "3", "--min-items", "0", "--state-dir", str(tmp_path / "state"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())["runs"]
    assert row["mcu"] == "python" and row["items_total"] > 0 and "cpu_steal_percent" in row
    report = json.loads((tmp_path / "sort_runs" / "python-1.5-8.0-none.json").read_text())
    assert row["report"].endswith("sort_runs/python-1.5-8.0-none.json")
    assert len(report["per_item"]) == row["items_total"] and report["wrong_bin"] == row["wrong_bin"]
    assert row["policy_gap_points"] + row["line_gap_points"] == pytest.approx(row["accuracy_gap_points"], abs=0.02)
    ejected = [it for it in report["per_item"] if it.get("acked")]
    assert ejected and all(it["latency_ms"] > 0 for it in ejected)
    assert row["latency_png"].endswith("sort_runs/python-1.5-8.0-none.png")
    assert (tmp_path / "sort_runs" / "python-1.5-8.0-none.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pooled = json.loads(out.read_text())["summary"]["fault_free_pooled"]
    assert pooled["items"] == row["items_total"] and pooled["sort_accuracy"] == row["sort_accuracy"]


def test_floor_sweep_counts_what_each_floor_would_send_to_the_default_bin():
    items = [{"true": "M", "top": "M", "confidence": 0.95}, {"true": "M", "top": "M", "confidence": 0.55},
             {"true": "C", "top": "BL", "confidence": 0.52}, {"true": "C", "top": "BL", "confidence": 0.8}]
    sweep = {row["floor"]: row for row in floor_sweep(items, (0.0, 0.5, 0.6))}
    assert sweep[0.0] == {"floor": 0.0, "graded": 4, "correct_to_default": 0, "misgraded_caught": 0,
                          "misgraded_to_grade_bin": 2, "cost_points": 0.0}
    assert (sweep[0.5]["correct_to_default"], sweep[0.5]["misgraded_caught"]) == (0, 0)
    assert sweep[0.6]["correct_to_default"] == 1 and sweep[0.6]["misgraded_caught"] == 1
    assert sweep[0.6]["misgraded_to_grade_bin"] == 1 and sweep[0.6]["cost_points"] == 25.0


def test_bench_sort_confidence_floor_zero_sends_every_graded_item_to_its_top_class(tmp_path):
    out = tmp_path / "sort.json"
    r = edgesort("bench", "sort", "--mcu", "python", "--speeds", "1.5", "--rates", "8", "--faults", "",
                 "--seconds", "3", "--min-items", "0", "--confidence-floor", "0",
                 "--state-dir", str(tmp_path / "state"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["confidence_floor"] == 0.0
    report = json.loads((tmp_path / "sort_runs" / "python-1.5-8.0-none.json").read_text())
    graded = [it for it in report["per_item"] if it.get("top")]
    assert graded and all(it["outcome"] != "uncertain" for it in graded)


def test_bench_sort_records_a_run_that_cannot_start_and_goes_on(tmp_path):
    out = tmp_path / "sort.json"
    r = edgesort("bench", "sort", "--mcu", "python", "--speeds", "1.5", "--rates", "2,8", "--faults", "",
                 "--seconds", "1", "--min-items", "0", "--bundle", str(tmp_path / "no_bundle"), "--json", str(out))
    assert r.returncode == 1
    rows = json.loads(out.read_text())["runs"]
    assert len(rows) == 2 and all("no_bundle" in row["error"] for row in rows)


def test_bench_sort_runs_each_variant_side_by_side(tmp_path):
    """--bauds and --switch-interval lists: the firmware runs once per rate and interval, the Python MCU (no wire)
    once per interval, and the variants of one line setting come one after the other (runs that cannot start,
    here for a missing bundle, still give their rows)."""
    out = tmp_path / "sort.json"
    r = edgesort("bench", "sort", "--mcu", "python,firmware", "--bauds", "115200,250000",
                 "--switch-interval", "0.005,0.001", "--speeds", "1.5", "--rates", "8", "--faults", "",
                 "--seconds", "1", "--min-items", "0", "--bundle", str(tmp_path / "no_bundle"), "--json", str(out))
    assert r.returncode == 1
    doc = json.loads(out.read_text())
    assert doc["switch_intervals_s"] == [0.005, 0.001]
    assert [(row["mcu"], row["baud"], row["switch_interval_s"]) for row in doc["runs"]] == [
        ("python", None, 0.005), ("python", None, 0.001),
        ("firmware", 115200, 0.005), ("firmware", 115200, 0.001),
        ("firmware", 250000, 0.005), ("firmware", 250000, 0.001),
    ]
