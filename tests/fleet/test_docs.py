"""docs/MQTT.md stays true: its payload schemas are the ones in device/fleet/payloads.py, its topics those of
device/fleet/topics.py."""

from __future__ import annotations

from pathlib import Path

from device.fleet import topics
from device.fleet.payloads import schema_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "MQTT.md"


def test_the_doc_holds_the_current_schemas() -> None:
    text = DOC.read_text()
    assert schema_markdown() in text, "regenerate the schema section: python -m device.fleet.payloads"


def test_the_doc_names_every_topic_and_verb() -> None:
    text = DOC.read_text()
    t = topics.DeviceTopics("s", "d")
    for topic in (t.status, t.telemetry, t.item, t.alarm, t.config_desired, t.config_reported):
        assert f"`{topic.removeprefix(t.base + '/')}`" in text
    for verb in topics.VERBS:
        assert f"`{verb}`" in text
