"""The topic contract: every MQTT topic a device publishes or listens to is built here and nowhere else.

edgesort/v1/<site>/<device>/status            retained, QoS 1: online | stopped | offline (Last Will)
edgesort/v1/<site>/<device>/telemetry         QoS 0, every mqtt.telemetry_period_s
edgesort/v1/<site>/<device>/events/item       QoS 1, through the outbox, per-device seq
edgesort/v1/<site>/<device>/events/alarm      QoS 1, through the outbox, same seq counter
edgesort/v1/<site>/<device>/cmd/<verb>        in, QoS 1: pause | resume | set_config | snapshot
edgesort/v1/<site>/<device>/result/...        out: command results (MQTT 5 response topic must lie here)
edgesort/v1/<site>/<device>/config/desired    in, retained: a signed set_config the device catches up to
edgesort/v1/<site>/<device>/config/reported   retained: the config version in force and the last outcome
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "edgesort/v1"
VERBS = ("pause", "resume", "set_config", "snapshot")
_LEVEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # the same rule as device.config.DeviceIdentity


def valid_level(name: str) -> bool:
    """A site or device id usable as one topic level (no '/', '+', '#', no empty level)."""
    return bool(_LEVEL.match(name))


@dataclass(frozen=True, slots=True)
class DeviceTopics:
    site: str
    device: str

    def __post_init__(self) -> None:
        for what, value in (("site", self.site), ("device", self.device)):
            if not valid_level(value):
                raise ValueError(
                    f"{what} {value!r} cannot be an MQTT topic level (letters, digits, _ . - only)"
                )

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.site}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def item(self) -> str:
        return f"{self.base}/events/item"

    @property
    def alarm(self) -> str:
        return f"{self.base}/events/alarm"

    @property
    def cmd_filter(self) -> str:
        return f"{self.base}/cmd/+"

    def cmd(self, verb: str) -> str:
        return f"{self.base}/cmd/{verb}"

    @property
    def result_prefix(self) -> str:
        return f"{self.base}/result/"

    def result(self, name: str) -> str:
        return f"{self.result_prefix}{name}"

    @property
    def config_desired(self) -> str:
        return f"{self.base}/config/desired"

    @property
    def config_reported(self) -> str:
        return f"{self.base}/config/reported"


@dataclass(frozen=True, slots=True)
class Parsed:
    site: str
    device: str
    kind: str  # status | telemetry | events/item | events/alarm | cmd/<verb> | config/... | result/...


def parse(topic: str) -> Parsed | None:
    """Split a topic under ROOT into (site, device, rest); None for anything else."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != ROOT:
        return None
    return Parsed(parts[2], parts[3], "/".join(parts[4:]))


def fleet_filters(site: str = "+") -> list[str]:
    """What `edgesort fleet watch` subscribes to."""
    return [f"{ROOT}/{site}/+/status", f"{ROOT}/{site}/+/telemetry", f"{ROOT}/{site}/+/events/alarm"]
