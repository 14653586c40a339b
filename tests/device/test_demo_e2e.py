"""The README's first command, end to end: the demo against a real mosquitto broker started here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet"))
from fleet_support import Broker, Collector

pytestmark = pytest.mark.mqtt


def test_demo_sorts_and_a_subscriber_receives_every_item_event(tmp_path):
    """The README's first command (40 s at the default 2 items/s), with a broker: sort_accuracy >= 0.95 over at
    least 60 items, and every item event reaches a subscriber."""
    broker = Broker(tmp_path / "broker").start()
    sub = Collector(broker.url, ["edgesort/v1/+/demo/#"])
    try:
        report_path = tmp_path / "report.json"
        r = subprocess.run(
            [sys.executable, "-m", "device.cli", "demo", "--seconds", "40", "--no-live", "--mqtt", broker.url,
             "--json", str(report_path), "--state-dir", str(tmp_path / "state")],
            capture_output=True, text=True, timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads(report_path.read_text())
        n = report["item_events"]
        assert report["items_total"] >= 60
        assert n >= report["items_decided"] > 0
        # the sorting core puts nothing in a bin its decision did not name; the model (99% on held-out twin crops)
        # may misgrade an item or two, and that shows in misgraded_bin and the accuracy, not here
        strays = [it for it in report["per_item"]
                  if it["bin"] not in (it["decided_bin"], it["expected_bin"], "default")]
        assert report["wrong_bin"] == 0, (strays, report["decisions_unmatched"],
                                          report["ejections"], report["aim"]["strays"])
        # nor does a stroke take a neighbour (of the same grade too, which no bin count shows)
        assert report["aim"]["strokes_took_other"] == 0, report["aim"]["strays"]
        assert report["misgraded_bin"] <= 0.05 * report["items_total"]
        # A host stopped for over 500 ms (a starved VM: this one had 15-50% CPU steal at times) makes the MCU go
        # safe and flush its queue, by design: those items reach the default bin, and the accuracy says so. What
        # must hold then too is wrong_bin == 0, above.
        if report["link"]["failsafes"] == 0:
            assert report["sort_accuracy"] >= 0.95
        events = sub.wait_for(lambda: (e := sub.on("/events/item")) and len({m.json()["seq"] for m in e}) >= n and e,
                              timeout=30, what=f"{n} item events")
        item_seqs = {m.json()["seq"] for m in events}
        assert len(item_seqs) == n
        # items and alarms share one per-device seq: together they must have no gap (nothing lost on the way)
        seqs = sorted(item_seqs | {m.json()["seq"] for m in sub.on("/events/alarm")})
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert {m.json()["device"] for m in events} == {"demo"}
        statuses = [m.json() for m in sub.on("/status")]
        assert statuses and statuses[-1]["state"] == "stopped"
    finally:
        sub.close()
        broker.stop()
