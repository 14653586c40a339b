"""The device config: one YAML file, validated once at start and passed down (DESIGN: Device config).

Every field has a default, bounds and a description; unknown keys are refused with the line that holds them.
Nothing else in the project reads YAML or the environment for settings. Secrets (MQTT passwords, TLS keys) are
never in this file: it names credential files, which systemd's LoadCredential provides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device.errors import ConfigError
from firmware_bridge.protocol import DEFAULT_BAUD


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceIdentity(_Section):
    id: str = Field("edgesort-0", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="device id (MQTT topic level)")
    site: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="site name (MQTT topic level)")


class CameraConfig(_Section):
    name: str = Field("cam0", description="name used in logs and telemetry")
    uri: str = Field(
        "sim://",
        description="csi://N, v4l2:///dev/videoN, rtsp://..., file://video, a folder of images, or sim://?params",
    )
    width: int = Field(1280, ge=16, le=8192)
    height: int = Field(720, ge=16, le=8192)
    fps: float = Field(30.0, gt=0, le=240)
    view: int = Field(0, ge=0, le=7, description="view index when several cameras see the same item")
    mm_per_px: float = Field(1.0, gt=0, description="belt millimetres per image pixel (calibration)")
    stall_timeout_s: float = Field(2.0, gt=0, description="no new frame for this long = source stalled")


class ModelConfig(_Section):
    bundle: Path = Field(Path("demo"), description="bundle directory or .tar; 'demo' = the built-in demo bundle")
    backend: Literal["auto", "tensorrt", "onnxruntime", "torch"] = "auto"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    threads: int = Field(0, ge=0, le=64, description="CPU threads for inference (0 = library default)")
    batch: int = Field(8, ge=1, le=64, description="largest batch of item crops per inference")
    dla_core: int | None = Field(None, ge=0, le=1, description="Jetson DLA core for TensorRT, or none for the GPU")
    require_signature: bool = Field(False, description="refuse bundles without a valid manifest.sig")
    trusted_keys: list[Path] = Field(default_factory=list, description="Ed25519 public keys (PEM) for bundles")


class GateConfig(_Section):
    id: int = Field(ge=0, le=7, description="gate output on the MCU (0-based, as in firmware_bridge/PROTOCOL.md)")
    distance_mm: float = Field(gt=0, description="from the camera's optical axis to the gate, along the belt")
    pulse_ms: int = Field(40, ge=1, le=1000, description="how long the gate is energised")


class LineConfig(_Section):
    ticks_per_mm: float = Field(2.0, gt=0, description="belt encoder ticks per millimetre of travel")
    max_belt_speed_mps: float = Field(1.5, gt=0, le=10, description="fastest belt speed the line runs at")
    decision_line_mm: float = Field(
        120.0, description="a track is decided when its centre passes this point (mm downstream of the axis)"
    )
    gates: list[GateConfig] = Field(
        default_factory=lambda: [
            GateConfig(id=i, distance_mm=400.0 + 100.0 * i) for i in range(8)
        ],
        min_length=1,
    )
    margin_ms: float = Field(15.0, ge=0, description="slack kept between the decision and the nearest gate")
    pusher_mm: float = Field(40.0, gt=0, description="width of a gate's pusher along the belt")
    clearance_margin_mm: float = Field(
        5.0, ge=0, description="extra room kept between a neighbour and the pusher's sweep before ejecting"
    )


class SortingConfig(_Section):
    grade_to_gate: dict[str, int] = Field(
        default_factory=lambda: {"2L": 0, "L": 1, "M": 2, "S": 3, "2S": 4, "BL": 5, "BM": 6, "BS": 7},
        description="grade -> gate id; a grade not listed goes to the default bin",
    )
    # 0.5: an item goes to a grade's bin only when that grade is more likely right than wrong. It is the
    # least-cost floor when an item in a wrong bin costs two hand re-sorts (an item in the default bin costs
    # one, whatever its grade; a floor f fits a wrong bin that costs 1 / (1 - f) re-sorts, so raise it where a
    # wrong bin costs more). That reading needs calibrated probabilities: on the twin, items decided at 0.5-0.6
    # were right 19 times in 28. Over 6398 items graded there, 0.6 sent 23 right-graded items to the default
    # bin to keep 11 misgrades out (0.36 point of sort accuracy), 0.5 sent 4 to keep 2 (`edgesort bench sort`
    # writes this sweep for the runs it made: summary.floor_sweep; docs/BENCHMARKS.md).
    confidence_floor: float = Field(0.5, ge=0, le=1, description="below this the item is 'uncertain'")
    confirm_frames: int = Field(2, ge=1, le=100, description="frames before a track is confirmed")
    drop_frames: int = Field(4, ge=1, le=100, description="frames unseen before a track is dropped")
    any_view_grades: list[str] = Field(
        default_factory=lambda: ["C"],
        description="with several views: a grade that wins when any one view is confident of it (a defect "
        "seen from one side only)",
    )


class BridgeConfig(_Section):
    port: str = Field("sim", description="pyserial URL (/dev/edgesort-mcu, socket://, spy://...) or 'sim'")
    baud: int = Field(DEFAULT_BAUD, ge=1200, le=2_000_000, description="the firmware's UART rate (its make BAUD=)")
    ack_timeout_ms: float = Field(50.0, gt=0)
    retries: int = Field(3, ge=0, le=20)


class MqttConfig(_Section):
    url: str | None = Field(None, description="mqtt://host:port or mqtts://host:port; none = outbox only")
    client_id: str | None = Field(None, description="default: the device id")
    keepalive_s: int = Field(30, ge=5, le=3600)
    telemetry_period_s: float = Field(5.0, gt=0)
    ca_file: Path | None = Field(None, description="CA certificate (PEM) for TLS")
    cert_file: Path | None = Field(None, description="client certificate (PEM)")
    key_file: Path | None = Field(None, description="client key (PEM)")
    username_file: Path | None = Field(None, description="file holding the user name (systemd credential)")
    password_file: Path | None = Field(None, description="file holding the password (systemd credential)")
    command_keys: list[Path] = Field(default_factory=list, description="Ed25519 public keys for signed commands")
    outbox_max_mb: float = Field(64.0, gt=0)
    outbox_max_age_h: float = Field(168.0, gt=0)
    outbox_fsync: bool = Field(
        True, description="fsync each event before it counts as written (survives power loss); false survives "
        "process crashes only, and is faster on slow eMMC/SD storage",
    )
    require_signed_commands: bool = Field(
        False, description="refuse unsigned pause/resume/snapshot too (set_config is always signed)"
    )


class PathsConfig(_Section):
    state_dir: Path = Field(Path("/var/lib/edgesort"), description="outbox, engine cache, snapshots")

    @property
    def outbox(self) -> Path:
        return self.state_dir / "outbox.sqlite"

    @property
    def engine_cache(self) -> Path:
        return self.state_dir / "engines"


class DeviceConfig(_Section):
    device: DeviceIdentity = DeviceIdentity()
    cameras: list[CameraConfig] = Field(default_factory=lambda: [CameraConfig()], min_length=1)
    model: ModelConfig = ModelConfig()
    line: LineConfig = LineConfig()
    sorting: SortingConfig = SortingConfig()
    bridge: BridgeConfig = BridgeConfig()
    mqtt: MqttConfig = MqttConfig()
    paths: PathsConfig = PathsConfig()

    @model_validator(mode="after")
    def _gates_exist(self) -> DeviceConfig:
        known = {g.id for g in self.line.gates}
        for grade, gate in self.sorting.grade_to_gate.items():
            if gate not in known:
                raise ValueError(f"sorting.grade_to_gate.{grade}: gate {gate} is not in line.gates")
        ids = [g.id for g in self.line.gates]
        if len(ids) != len(set(ids)):
            raise ValueError("line.gates: gate ids must be unique")
        for g in self.line.gates:
            if g.distance_mm <= self.line.decision_line_mm:
                raise ValueError(f"line.gates: gate {g.id} at {g.distance_mm} mm is not past the decision line")
        return self

    def decision_budget_ms(self) -> float:
        """Time from the decision line to the nearest gate at the fastest belt speed, less the margin."""
        nearest = min(g.distance_mm for g in self.line.gates)
        travel_ms = (nearest - self.line.decision_line_mm) / self.line.max_belt_speed_mps  # mm / (m/s) = ms
        return travel_ms - self.line.margin_ms


def check_geometry(cfg: DeviceConfig, decision_latency_ms: float) -> None:
    """Refuse a line whose nearest gate comes sooner than a decision can be made and queued."""
    budget = cfg.decision_budget_ms()
    if decision_latency_ms > budget:
        raise ConfigError(
            f"line geometry cannot be met: an item travels from the decision line to the nearest gate in "
            f"{budget + cfg.line.margin_ms:.1f} ms at {cfg.line.max_belt_speed_mps} m/s, but a decision takes "
            f"{decision_latency_ms:.1f} ms plus a {cfg.line.margin_ms:.0f} ms margin; move the decision line "
            f"upstream, the gates downstream, or lower line.max_belt_speed_mps"
        )


def _line_index(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map every key path in a YAML document to its 1-based line number."""
    out: dict[tuple[Any, ...], int] = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            out.update({p: ln for p, ln in _line_index(v, (*path, key)).items() if p != (*path, key)})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_line_index(v, (*path, i)))
    return out


def _describe(exc: ValidationError, lines: dict[tuple[Any, ...], int], source: str) -> str:
    msgs = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(x) for x in loc) or "(top level)"
        # The deepest part of the path that exists in the file gives the line (an absent key: its parent's).
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
        where = f"{source}:{line}" if line else source
        reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msgs.append(f"{where}: {key}: {reason}")
    return "; ".join(msgs)


def parse_config(text: str, source: str = "<config>") -> DeviceConfig:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})".replace("\n", " ")) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    try:
        return DeviceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, _line_index(node) if node else {}, source)) from exc


def load_config(path: str | Path) -> DeviceConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from exc
    return parse_config(text, str(p))
