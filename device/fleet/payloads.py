"""Payload schemas for every fleet topic (pydantic). docs/MQTT.md shows their JSON schemas (a test keeps it
true).

Event payloads are flat JSON objects. The reporter adds the envelope fields (v, seq, ts, device, site,
stream); the daemon's own fields ride beside them. A subscriber dedupes by (device, stream, seq): `stream`
changes only when a device's state directory is wiped, which restarts `seq` at 1.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1
_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_CMD_ID = r"^[A-Za-z0-9_-]{8,64}$"
MAX_COMMAND_BYTES = 256 * 1024  # a set_config document is a few kB; anything far bigger is refused unread


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Known fields are typed; the daemon may add more (they pass through unchanged)."""

    model_config = ConfigDict(extra="allow")


class Status(_Strict):
    """`status`, retained. `offline` is the Last Will, registered at start (so its ts is the start time)."""

    v: Literal[1] = SCHEMA_VERSION
    state: Literal["online", "stopped", "offline"]
    device: str = Field(pattern=_ID)
    site: str = Field(pattern=_ID)
    session: int = Field(ge=1, description="start counter of this device, persisted in the state dir")
    stream: str = Field(description="event stream id (see events: dedupe by device, stream, seq)")
    ts: float = Field(description="unix time (s) this status was produced")
    versions: dict[str, str] = Field(default_factory=dict, description="software, model, firmware versions")


class LatencyStat(_Strict):
    p50_ms: float | None = None
    p99_ms: float | None = None


class OutboxStats(_Strict):
    pending: int = Field(ge=0, description="events written but not yet acknowledged by the broker")
    pending_bytes: int = Field(ge=0)
    oldest_age_s: float | None = Field(None, description="age of the oldest pending event")
    dropped_size: int = Field(
        0, ge=0, description="events dropped (oldest first) to stay under outbox_max_mb"
    )
    dropped_age: int = Field(0, ge=0, description="events dropped for being older than outbox_max_age_h")
    rejected: int = Field(0, ge=0, description="events the broker refused for good (PUBACK reason >= 0x80)")
    last_seq: int = Field(0, ge=0)


class MqttStats(_Strict):
    connected: bool
    connects: int = Field(ge=0, description="successful connections since start")
    disconnects: int = Field(ge=0)


class CommandStats(_Strict):
    accepted: int = Field(ge=0)
    refused: int = Field(ge=0)


class Telemetry(_Open):
    """`telemetry`, QoS 0, not retained. Daemon fields come from its pure snapshot function."""

    v: Literal[1] = SCHEMA_VERSION
    ts: float
    device: str = Field(pattern=_ID)
    site: str = Field(pattern=_ID)
    session: int = Field(ge=1)
    fps: float | None = Field(None, ge=0, description="frames processed per second")
    dropped_frames: int | None = Field(None, ge=0, description="frames dropped by capture (latest wins)")
    latency_ms: dict[str, LatencyStat] = Field(default_factory=dict, description="per pipeline stage")
    counts: dict[str, int] = Field(default_factory=dict, description="items per grade since start")
    reject_rate: float | None = Field(None, ge=0, le=1, description="share of items sent to the default bin")
    belt_speed_mps: float | None = Field(None, ge=0)
    link: dict[str, int | float] = Field(default_factory=dict, description="serial link counters")
    temperatures_c: dict[str, float] = Field(default_factory=dict, description="thermal zones")
    model: str | None = Field(None, description="model id: name@version (sha256 prefix)")
    paused: bool | None = None
    outbox: OutboxStats
    mqtt: MqttStats
    commands: CommandStats
    snapshot_error: str | None = Field(None, description="why the daemon's snapshot was left out, if it was")


class ItemEvent(_Open):
    """`events/item`, QoS 1, through the outbox."""

    v: Literal[1] = SCHEMA_VERSION
    seq: int = Field(ge=1, description="per-device, monotonic across restarts, shared with alarms")
    ts: float = Field(description="unix time (s) of the event itself, not of its (re)delivery")
    device: str = Field(pattern=_ID)
    site: str = Field(pattern=_ID)
    stream: str
    item: int | None = Field(None, description="track id")
    grade: str | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    gate: int | None = Field(None, description="gate fired, none = default bin")
    outcome: str | None = Field(None, description="queued | late | full | default | uncertain | ...")


class AlarmEvent(_Open):
    """`events/alarm`, QoS 1, through the outbox."""

    v: Literal[1] = SCHEMA_VERSION
    seq: int = Field(ge=1)
    ts: float
    device: str = Field(pattern=_ID)
    site: str = Field(pattern=_ID)
    stream: str
    kind: str = Field(
        pattern=r"^[a-z0-9_.-]{1,64}$", description="e.g. camera_stalled, link_lost, late_eject"
    )
    message: str = Field(max_length=1000)
    severity: Literal["info", "warning", "error", "critical"] = "warning"


class CommandEnvelope(_Strict):
    """Payload of `cmd/<verb>` and of `config/desired`: the signed bytes travel as they were signed."""

    body: str = Field(max_length=MAX_COMMAND_BYTES, description="CommandBody as JSON text; the signed bytes")
    sig: str | None = Field(None, description="base64 Ed25519 signature over body (UTF-8)")


class CommandBody(_Strict):
    v: Literal[1] = SCHEMA_VERSION
    verb: str = Field(description="must equal the verb in the topic")
    site: str = Field(pattern=_ID)
    device: str = Field(pattern=_ID, description="the command is refused by any other device")
    id: str = Field(pattern=_CMD_ID, description="unique; a repeated id is refused as a replay")
    issued: float = Field(description="unix time (s) the command was made")
    expires: float = Field(description="unix time (s) after which the device refuses it")
    args: dict[str, Any] = Field(default_factory=dict)


class SetConfigArgs(_Strict):
    version: int = Field(ge=1, description="must be greater than the version in force")
    config: dict[str, Any] = Field(description="partial device config, merged into the one in force")


class CommandResult(_Strict):
    """Published on the request's MQTT 5 response topic (with its correlation data) or on result/<verb>."""

    v: Literal[1] = SCHEMA_VERSION
    ok: bool
    verb: str
    id: str | None = Field(None, description="the command id, when the command could be read that far")
    device: str
    site: str
    ts: float
    reasons: list[str] = Field(default_factory=list, description="why it was refused (empty when ok)")
    result: dict[str, Any] = Field(default_factory=dict, description="snapshot: jpeg_b64, width, height")


class ConfigReported(_Strict):
    """`config/reported`, retained: what is in force after the latest set_config (applied or refused)."""

    v: Literal[1] = SCHEMA_VERSION
    ts: float
    device: str
    site: str
    version: int = Field(ge=0, description="version in force (0 = the file the daemon started with)")
    version_high: int = Field(0, ge=0, description="highest version ever applied; a new one must exceed it")
    last_id: str | None = Field(None, description="id of the latest set_config seen")
    last_version: int | None = Field(None, description="version it asked for")
    ok: bool = Field(description="whether the latest set_config was applied")
    reasons: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(description="the device config in force")


SCHEMAS: dict[str, type[BaseModel]] = {
    "status": Status,
    "telemetry": Telemetry,
    "events/item": ItemEvent,
    "events/alarm": AlarmEvent,
    "cmd/<verb> and config/desired (envelope)": CommandEnvelope,
    "command body (the signed JSON text)": CommandBody,
    "set_config args": SetConfigArgs,
    "command result": CommandResult,
    "config/reported": ConfigReported,
}


def dumps(payload: BaseModel | dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the same bytes every time for the same content."""
    data = payload.model_dump(mode="json", exclude_none=True) if isinstance(payload, BaseModel) else payload
    return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def schema_json(name: str) -> str:
    return json.dumps(SCHEMAS[name].model_json_schema(), indent=2, sort_keys=True)


def schema_markdown() -> str:
    """The "Payload schemas" section of docs/MQTT.md (`python -m device.fleet.payloads` prints it)."""
    parts = []
    for name in SCHEMAS:
        parts.append(f"### {name}\n\n```json\n{schema_json(name)}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(schema_markdown(), end="")
