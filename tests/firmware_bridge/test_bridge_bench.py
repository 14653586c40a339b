"""`edgesort bench bridge` end to end in a short form (the figures themselves live in
docs/benchmarks/firmware.md; nothing here asserts a time)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from firmware_bridge import bench


def run_bench(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bridge.json"
    short = ["--samples", "10", "--ejections", "20", "--corrupt", "60", "--bursts", "10", "--retries", "20"]
    args = parser.parse_args(["--json", str(out), *short, *extra])
    rc = bench.run(args)
    return rc, json.loads(out.read_text())


def check(rc: int, res: dict) -> None:
    assert rc == 0
    assert set(res["round_trip"]) == {f"{m} stream={s}" for m in ("HEARTBEAT", "QUEUE_EJECT") for s in ("on", "off")}
    assert all(r["n"] == 10 and r["p50_ms"] > 0 for r in res["round_trip"].values())
    fp = res["fire_position"]
    assert fp["fired_reports"] == 20 and fp["gate_pin_edges"] == 20 and fp["max_abs_error"] == 0
    cr = res["corruption"]
    assert cr["misfires"] == 0 and cr["fired_reports_of_corrupted_items"] == 0
    assert cr["mcu_rejected_frames"] >= 60
    assert cr["valid_fired_at_target"] == cr["valid_ejections_queued"] == 6
    # at the default baud the MCU keeps up with eight ejections in flight: no byte lost to a full receive ring
    bu = res["bursts"]
    assert (bu["bursts"], bu["size"], bu["mcu_overruns"], bu["mcu_crc_errors"]) == (10, 8, 0, 0)


def test_bench_bridge_python_mcu(tmp_path: Path) -> None:
    check(*run_bench(tmp_path))


@pytest.mark.simavr
def test_bench_bridge_firmware(tmp_path: Path, firmware_build: tuple[Path, Path], monkeypatch) -> None:
    monkeypatch.setenv("EDGESORT_FIRMWARE_BUILD", str(firmware_build[0].parent.parent))
    check(*run_bench(tmp_path, "--firmware"))
