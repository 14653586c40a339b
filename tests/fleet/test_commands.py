"""Remote commands against a real broker: 200 malformed or forged ones refused with reasons (the reporter
keeps running and obeys the next valid one), and the valid verbs with MQTT 5 response topic + correlation
data.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fleet_support import Broker, Collector, RecordingHandler

from device.config import DeviceConfig
from device.fleet.commands import make_command
from device.fleet.reporter import FleetReporter
from device.signing import generate_keypair

pytestmark = pytest.mark.mqtt

SITE, DEVICE = "test", "cmd-0"
BASE = f"edgesort/v1/{SITE}/{DEVICE}"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("ops", "rogue"):
        generate_keypair(tmp_path / f"{name}.key", tmp_path / f"{name}.pub")
        out[name] = tmp_path / f"{name}.key"
        out[name + "_pub"] = tmp_path / f"{name}.pub"
    return out


def _evil(i: int) -> bool:
    """Every 7th bad command asks for its answer outside the device's result/ tree."""
    return i % 7 == 3


def _reporter(url: str, state: Path, keys: dict[str, Path], handler: RecordingHandler) -> FleetReporter:
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": DEVICE, "site": SITE},
            "mqtt": {"url": url, "telemetry_period_s": 60, "command_keys": [str(keys["ops_pub"])]},
            "paths": {"state_dir": str(state)},
        }
    )
    rep = FleetReporter(cfg, versions={}, telemetry=dict, commands=handler)
    rep.start()
    deadline = time.monotonic() + 10
    while not rep.connected and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the first CONNACK
    assert rep.connected
    return rep


def _send(
    sub: Collector, topic: str, payload: bytes, *, response_topic: str | None = None, timeout: float = 10
) -> dict[str, Any]:
    """Publish a command and wait for the result that carries our correlation data."""
    corr = uuid.uuid4().hex.encode()
    sub.publish(
        topic, payload, response_topic=response_topic or f"{BASE}/result/{uuid.uuid4().hex}", correlation=corr
    )
    msg = sub.wait_for(
        lambda: next((m for m in sub.messages if m.correlation == corr), None),
        timeout,
        f"the result of {topic}",
    )
    assert msg.content_type == "application/json"
    result = msg.json()
    result["_topic"] = msg.topic
    return result


def _cmd(verb: str, args: dict[str, Any] | None = None, **kw: Any) -> bytes:
    return make_command(verb, SITE, DEVICE, args, **kw)[0]


def _tamper(payload: bytes) -> bytes:
    env = json.loads(payload)
    body = json.loads(env["body"])
    body["args"]["config"] = {"sorting": {"confidence_floor": 0.01}}
    env["body"] = json.dumps(body)
    return json.dumps(env).encode()


def _bad_commands(keys: dict[str, Path], replayed: bytes) -> list[tuple[str, bytes, str]]:
    """(verb in the topic, payload, a piece of the expected reason) for each kind of bad command."""
    ops, rogue = keys["ops"], keys["rogue"]
    now = time.time()

    def sc(config: dict[str, Any], version: int, **kw: Any) -> bytes:
        return _cmd("set_config", {"version": version, "config": config}, **kw)

    def env(body: Any, sig: Any = None) -> bytes:
        return json.dumps({"body": body if isinstance(body, str) else json.dumps(body), "sig": sig}).encode()

    good_body = json.loads(json.loads(_cmd("pause"))["body"])
    kinds: list[Callable[[int], tuple[str, bytes, str]]] = [
        lambda i: ("pause", os.urandom(1 + i % 40), "malformed envelope"),
        lambda i: ("pause", b"", "malformed envelope"),
        lambda i: ("resume", b'{"body": "{not json', "malformed envelope"),
        lambda i: ("pause", b"[1, 2, 3]", "malformed envelope"),
        lambda i: ("pause", b'{"sig": "AAAA"}', "malformed envelope"),
        lambda i: ("pause", env(good_body)[:-1] + b', "extra": 1}', "malformed envelope"),
        lambda i: ("pause", env("definitely not json"), "malformed body"),
        lambda i: ("pause", env({"verb": "pause"}), "malformed body"),
        lambda i: ("pause", env({**good_body, "id": "x"}), "malformed body"),
        lambda i: ("reboot", _cmd("reboot"), "unknown verb"),
        lambda i: ("pause", _cmd("resume", key=ops), "does not match the topic verb"),
        lambda i: ("pause", make_command("pause", SITE, "other-device", key=ops)[0], "not to this device"),
        lambda i: ("set_config", sc({"sorting": {"confidence_floor": 0.7}}, 1000 + i), "must be signed"),
        lambda i: (
            "set_config",
            sc({"sorting": {"confidence_floor": 0.7}}, 1000 + i, key=rogue),
            "signature refused",
        ),
        lambda i: (
            "set_config",
            _tamper(sc({"sorting": {"confidence_floor": 0.7}}, 1000 + i, key=ops)),
            "signature refused",
        ),
        lambda i: ("pause", env(good_body, sig="!!not base64!!"), "not valid base64"),
        lambda i: (
            "pause",
            env(good_body, sig=base64.b64encode(os.urandom(64)).decode()),
            "signature refused",
        ),
        lambda i: ("pause", _cmd("pause", key=ops, now=now - 600), "expired"),
        lambda i: ("pause", _cmd("pause", key=ops, ttl_s=7200), "lifetime over"),
        lambda i: ("pause", _cmd("pause", key=ops, now=now + 3600, ttl_s=30), "issued in the future"),
        lambda i: ("pause", replayed, "replayed"),
        lambda i: (
            "set_config",
            sc({"sorting": {"confidence_floor": 5}}, 1000 + i, key=ops),
            "sorting.confidence_floor",
        ),
        lambda i: (
            "set_config",
            sc({"mqtt": {"url": "mqtt://evil:1883"}}, 1000 + i, key=ops),
            "mqtt can only be changed",
        ),
        lambda i: ("set_config", sc({"nonsense": {"x": 1}}, 1000 + i, key=ops), "unknown key"),
        lambda i: ("set_config", sc({"sorting": {"confidence_floor": 0.7}}, 3, key=ops), "not newer"),
        lambda i: ("set_config", _cmd("set_config", {"config": {}}, key=ops), "args.version"),
        lambda i: (
            "set_config",
            sc({"line": {"max_belt_speed_mps": 5}}, 1000 + i, key=ops),
            "needs a restart",
        ),
        lambda i: ("pause", _cmd("pause", {"now": True}), "takes no arguments"),
        lambda i: ("pause", b'{"body": "' + b"x" * 300_000 + b'"}', "over the"),
    ]
    return [kinds[i % len(kinds)](i) for i in range(200)]


def test_200_malformed_or_forged_commands_are_refused_and_the_reporter_keeps_obeying(
    broker: Broker,
    collector_factory: Callable[..., Collector],
    keys: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = RecordingHandler()
    rep = _reporter(broker.url, tmp_path / "state", keys, handler)
    sub = collector_factory(broker.url, [f"{BASE}/result/#", "evil/#"])

    # Two valid commands first: a set_config (version 10) and a pause whose payload is then replayed.
    ok = _send(
        sub,
        f"{BASE}/cmd/set_config",
        _cmd(
            "set_config", {"version": 10, "config": {"sorting": {"confidence_floor": 0.65}}}, key=keys["ops"]
        ),
    )
    assert ok["ok"], ok
    replayed = _cmd("pause", key=keys["ops"])
    assert _send(sub, f"{BASE}/cmd/pause", replayed)["ok"]
    assert handler.calls == ["set_config", "pause"]

    caplog.set_level(logging.WARNING, logger="edgesort.fleet.commands")
    bad = _bad_commands(keys, replayed)
    assert len(bad) == 200
    for i, (verb, payload, reason) in enumerate(bad):
        response_topic = "evil/answers" if _evil(i) else None
        res = _send(sub, f"{BASE}/cmd/{verb}", payload, response_topic=response_topic)
        assert res["ok"] is False, (i, verb, res)
        if response_topic:  # refused for that before any other check, and answered on result/<verb>
            assert res["_topic"].startswith(f"{BASE}/result/")
            assert any("is not under" in r for r in res["reasons"])
        else:
            assert any(reason in r for r in res["reasons"]), (i, reason, res["reasons"])

    assert not [m for m in sub.messages if m.topic.startswith("evil/")]
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused command")]
    assert len(refusals) == 200
    assert rep.stats()["commands"] == {"accepted": 2, "refused": 200}
    # The handler saw only what passed every check (and the one set_config it refused itself).
    handler_refused = sum(
        "needs a restart" in reason and not _evil(i) for i, (_, _, reason) in enumerate(bad)
    )
    assert handler.calls == ["set_config", "pause"] + ["set_config"] * handler_refused
    assert [c["sorting"]["confidence_floor"] for c in handler.configs] == [0.65]

    # Still running, still connected, still obeying.
    assert rep.connected
    assert _send(sub, f"{BASE}/cmd/resume", _cmd("resume"))["ok"]
    res = _send(
        sub,
        f"{BASE}/cmd/set_config",
        _cmd(
            "set_config", {"version": 11, "config": {"sorting": {"confidence_floor": 0.75}}}, key=keys["ops"]
        ),
    )
    assert res["ok"] and res["result"] == {"version": 11}
    assert handler.configs[-1]["sorting"]["confidence_floor"] == 0.75
    rep.stop()


def test_valid_commands_answer_on_the_response_topic_and_config_is_reported(
    broker: Broker,
    collector_factory: Callable[..., Collector],
    keys: dict[str, Path],
    tmp_path: Path,
) -> None:
    handler = RecordingHandler()
    rep = _reporter(broker.url, tmp_path / "state", keys, handler)
    sub = collector_factory(broker.url, [f"{BASE}/result/#", f"{BASE}/config/reported"])

    assert _send(sub, f"{BASE}/cmd/pause", _cmd("pause"))["ok"]
    assert _send(sub, f"{BASE}/cmd/resume", _cmd("resume", key=keys["ops"]))[
        "ok"
    ]  # a signed pause is fine too
    snap = _send(sub, f"{BASE}/cmd/snapshot", _cmd("snapshot"))
    jpeg = base64.b64decode(snap["result"]["jpeg_b64"])
    assert jpeg[:2] == b"\xff\xd8" and snap["result"]["bytes"] == len(jpeg)
    res = _send(
        sub,
        f"{BASE}/cmd/set_config",
        _cmd("set_config", {"version": 5, "config": {"sorting": {"confidence_floor": 0.8}}}, key=keys["ops"]),
    )
    assert res["ok"], res
    assert handler.calls == ["pause", "resume", "snapshot", "set_config"]

    def reported() -> dict[str, Any] | None:
        docs = [m.json() for m in sub.on("config/reported")]
        return docs[-1] if docs and docs[-1].get("version") == 5 else None

    doc = sub.wait_for(reported, 10, "config/reported version 5")
    assert doc["ok"] and doc["version_high"] == 5 and doc["config"]["sorting"]["confidence_floor"] == 0.8
    rep.stop()

    # config/desired (retained) is applied when the device connects; the version persists across restarts.
    desired, desired_id = make_command(
        "set_config",
        SITE,
        DEVICE,
        {"version": 6, "config": {"sorting": {"confidence_floor": 0.9}}},
        key=keys["ops"],
    )
    sub.publish(f"{BASE}/config/desired", desired, retain=True)
    handler2 = RecordingHandler()
    rep2 = _reporter(broker.url, tmp_path / "state", keys, handler2)
    doc = sub.wait_for(
        lambda: next(
            (m.json() for m in sub.on("config/reported") if m.json().get("last_id") == desired_id), None
        ),
        10,
        "desired applied",
    )
    assert doc["ok"] and doc["version"] == 6
    assert handler2.configs[-1]["sorting"]["confidence_floor"] == 0.9
    rep2.stop()
    # Seen again at the next start: neither re-applied nor counted as an attack.
    handler3 = RecordingHandler()
    rep3 = _reporter(broker.url, tmp_path / "state", keys, handler3)
    time.sleep(1)  # the retained desired arrives right after the subscription; give the worker a moment
    assert handler3.calls == [] and rep3.stats()["commands"]["refused"] == 0
    rep3.stop()
