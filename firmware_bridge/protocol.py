"""The host <-> MCU wire format (firmware_bridge/PROTOCOL.md), pure: no I/O, no threads, no clocks.

A frame on the wire is COBS(body) followed by 0x00, where
body = version u8 | type u8 | seq u16 | payload | crc16 u16, all little-endian, and the CRC is
CRC-16/CCITT-FALSE over version..payload. The firmware (firmware/protocol.c) implements the same spec; both
are checked against firmware_bridge/vectors/*.json.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
DELIMITER = 0x00
HEADER_LEN = 4  # version, type, seq
CRC_LEN = 2
MAX_PAYLOAD = 58
MAX_BODY = HEADER_LEN + MAX_PAYLOAD + CRC_LEN  # 64
# COBS adds one byte per started 254-byte block: a 64-byte body encodes to at most 65 bytes.
MAX_ENCODED = MAX_BODY + 1
MIN_BODY = HEADER_LEN + CRC_LEN

# The firmware's default UART rate (exact at 16 MHz; its Makefile's BAUD). A QUEUE_EJECT and its reply take
# 1.4 ms on the wire, against 3.0 ms at 115200, which stays available (`make BAUD=115200`, bridge.baud).
DEFAULT_BAUD = 250000
HEARTBEAT_PERIOD_S = 0.100
FAILSAFE_TIMEOUT_S = 0.500
ACK_TIMEOUT_S = 0.050
RETRIES = 3
ENCODER_STREAM_PERIOD_MS = 10


class MsgType(enum.IntEnum):
    # host -> MCU commands; the MCU answers each with (type | 0x80)
    HELLO = 0x01
    HEARTBEAT = 0x02
    QUEUE_EJECT = 0x03
    CANCEL = 0x04
    SAFE = 0x05
    STATUS = 0x06
    TEST_PULSE = 0x07
    CONFIGURE = 0x08
    # MCU -> host replies
    HELLO_REPLY = 0x81
    HEARTBEAT_REPLY = 0x82
    QUEUE_REPLY = 0x83
    CANCEL_REPLY = 0x84
    SAFE_REPLY = 0x85
    STATUS_REPLY = 0x86
    TEST_PULSE_REPLY = 0x87
    CONFIGURE_REPLY = 0x88
    # MCU -> host, unsolicited
    BOOT = 0x90
    ENCODER = 0x91
    FIRED = 0x92
    FAILSAFE = 0x93
    NAK = 0xFF


class Result(enum.IntEnum):
    OK = 0  # queued / cancelled / done
    LATE = 1
    FULL = 2
    BAD_ARG = 3
    NOT_LINKED = 4
    NOT_FOUND = 5
    UNKNOWN_TYPE = 6
    BAD_VERSION = 7
    BAD_LENGTH = 8


class McuState(enum.IntEnum):
    UNLINKED = 0  # after boot: only HELLO, HEARTBEAT, STATUS, SAFE are served
    LINKED = 1
    FAILSAFE = 2  # host silent for 500 ms: queue flushed, gates off, HELLO needed


class FailsafeReason(enum.IntEnum):
    HOST_SILENT = 1


# Commands that change the world: acknowledged by sequence, retried by the host, deduplicated by the MCU.
WORLD_CHANGING = frozenset({MsgType.QUEUE_EJECT, MsgType.CANCEL, MsgType.SAFE, MsgType.TEST_PULSE, MsgType.CONFIGURE})

# Payload layouts: struct format (little-endian) and field names, one per message type.
LAYOUTS: dict[MsgType, tuple[str, tuple[str, ...]]] = {
    MsgType.HELLO: ("<", ()),
    MsgType.HEARTBEAT: ("<", ()),
    MsgType.QUEUE_EJECT: ("<IBIH", ("item_id", "gate", "fire_at_count", "pulse_ms")),
    MsgType.CANCEL: ("<I", ("item_id",)),
    MsgType.SAFE: ("<", ()),
    MsgType.STATUS: ("<", ()),
    MsgType.TEST_PULSE: ("<BH", ("gate", "pulse_ms")),
    MsgType.CONFIGURE: ("<H", ("stream_period_ms",)),
    MsgType.HELLO_REPLY: (
        "<HBHBBBII",
        (
            "acked_seq",
            "proto",
            "fw_version",
            "queue_capacity",
            "gate_count",
            "reset_cause",
            "mcu_us",
            "count",
        ),
    ),
    MsgType.HEARTBEAT_REPLY: ("<HBBII", ("acked_seq", "state", "queue_depth", "mcu_us", "count")),
    MsgType.QUEUE_REPLY: ("<HBBI", ("acked_seq", "result", "queue_depth", "count")),
    MsgType.CANCEL_REPLY: ("<HB", ("acked_seq", "result")),
    MsgType.SAFE_REPLY: ("<HBB", ("acked_seq", "result", "flushed")),
    MsgType.STATUS_REPLY: (
        "<HBBIIBBIIHHHHHIHHH",
        (
            "acked_seq",
            "state",
            "queue_depth",
            "mcu_us",
            "count",
            "gates",
            "reset_cause",
            "rx_frames",
            "tx_frames",
            "crc_errors",
            "cobs_errors",
            "overruns",
            "seq_gaps",
            "duplicates",
            "fired",
            "late",
            "full",
            "failsafes",
        ),
    ),
    MsgType.TEST_PULSE_REPLY: ("<HB", ("acked_seq", "result")),
    MsgType.CONFIGURE_REPLY: ("<HB", ("acked_seq", "result")),
    MsgType.BOOT: ("<BHB", ("reset_cause", "fw_version", "proto")),
    MsgType.ENCODER: ("<II", ("mcu_us", "count")),
    MsgType.FIRED: ("<IBIII", ("item_id", "gate", "target", "actual", "mcu_us")),
    MsgType.FAILSAFE: ("<BB", ("reason", "flushed")),
    MsgType.NAK: ("<HBB", ("acked_seq", "result", "bad_type")),
}


class ProtocolError(ValueError):
    """A payload that does not match its message layout (pure-codec error; the link wraps it)."""


def crc16(data: bytes, init: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor): stdlib binascii."""
    return binascii.crc_hqx(data, init)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing. Hand-written (15 lines) because the C firmware needs the same
    code anyway and both are held to the shared vectors; the output never contains 0x00."""
    out = bytearray([0])
    code_at = 0
    last = len(data) - 1
    for i, b in enumerate(data):
        if b:
            out.append(b)
        if b == 0 or len(out) - code_at == 0xFF:
            out[code_at] = len(out) - code_at
            code_at = len(out)
            if b == 0 or i != last:  # a full block at the very end opens no empty block (as in Wikipedia)
                out.append(0)
    if code_at < len(out):
        out[code_at] = len(out) - code_at
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Strict COBS decode of one frame (without its delimiter); raises ProtocolError on any malformation."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError("COBS frame holds a zero byte")
        end = i + code
        if end > n:
            raise ProtocolError("COBS code points past the end of the frame")
        block = data[i + 1 : end]
        if 0 in block:
            raise ProtocolError("COBS frame holds a zero byte")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION

    def fields(self) -> dict[str, int]:
        """The payload unpacked by its layout; ProtocolError on unknown type or wrong length."""
        return unpack_payload(self.type, self.payload)

    @property
    def name(self) -> str:
        try:
            return MsgType(self.type).name
        except ValueError:
            return f"0x{self.type:02x}"


def pack_payload(msg_type: int, **fields: int) -> bytes:
    try:
        fmt, names = LAYOUTS[MsgType(msg_type)]
    except (ValueError, KeyError) as exc:
        raise ProtocolError(f"unknown message type 0x{msg_type:02x}") from exc
    if set(fields) != set(names):
        raise ProtocolError(f"{MsgType(msg_type).name} takes fields {names}, got {tuple(fields)}")
    try:
        return struct.pack(fmt, *(fields[n] for n in names))
    except struct.error as exc:
        raise ProtocolError(f"{MsgType(msg_type).name}: {exc}") from exc


def unpack_payload(msg_type: int, payload: bytes) -> dict[str, int]:
    try:
        fmt, names = LAYOUTS[MsgType(msg_type)]
    except (ValueError, KeyError) as exc:
        raise ProtocolError(f"unknown message type 0x{msg_type:02x}") from exc
    if struct.calcsize(fmt) != len(payload):
        raise ProtocolError(
            f"{MsgType(msg_type).name} payload is {len(payload)} bytes, expected {struct.calcsize(fmt)}"
        )
    return dict(zip(names, struct.unpack(fmt, payload), strict=True))


def encode_body(msg_type: int, seq: int, payload: bytes = b"", version: int = PROTOCOL_VERSION) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = struct.pack("<BBH", version, msg_type, seq & 0xFFFF) + payload
    return head + struct.pack("<H", crc16(head))


def encode(msg_type: int, seq: int, payload: bytes = b"", version: int = PROTOCOL_VERSION) -> bytes:
    """One complete wire frame: COBS(body) + 0x00."""
    return cobs_encode(encode_body(msg_type, seq, payload, version)) + b"\x00"


def encode_message(msg_type: int, seq: int, **fields: int) -> bytes:
    return encode(msg_type, seq, pack_payload(msg_type, **fields))


def wire_time_s(frame_len: int, baud: int = DEFAULT_BAUD) -> float:
    """Time the UART needs for frame_len bytes at 8N1 (10 bits per byte)."""
    return frame_len * 10 / baud


class FrameError(enum.Enum):
    COBS = "cobs_errors"
    SHORT = "short_frames"
    CRC = "crc_errors"
    VERSION = "version_errors"


def decode_body_bytes(encoded: bytes) -> Frame | FrameError:
    """Decode one frame without its delimiter; the error kind on failure (no exceptions in the hot path)."""
    try:
        body = cobs_decode(encoded)
    except ProtocolError:
        return FrameError.COBS
    if len(body) < MIN_BODY:
        return FrameError.SHORT
    if crc16(body[:-CRC_LEN]) != int.from_bytes(body[-CRC_LEN:], "little"):
        return FrameError.CRC
    version, msg_type, seq = struct.unpack_from("<BBH", body)
    if version != PROTOCOL_VERSION:
        return FrameError.VERSION
    return Frame(type=msg_type, seq=seq, payload=bytes(body[HEADER_LEN:-CRC_LEN]), version=version)


def decode(frame: bytes) -> Frame:
    """Decode exactly one wire frame (with or without its trailing 0x00); ProtocolError if invalid."""
    if frame.endswith(b"\x00"):
        frame = frame[:-1]
    got = decode_body_bytes(frame)
    if isinstance(got, FrameError):
        raise ProtocolError(f"invalid frame: {got.value}")
    return got


@dataclass
class FrameDecoder:
    """Streaming decoder: feed any chunks, get whole valid frames. Resyncs at the next 0x00; the receive
    buffer is bounded (a run longer than any valid frame is dropped and counted as an overrun)."""

    max_encoded: int = MAX_ENCODED
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "frames": 0,
            "crc_errors": 0,
            "cobs_errors": 0,
            "short_frames": 0,
            "version_errors": 0,
            "overruns": 0,
            "bytes": 0,
        }
    )
    _buf: bytearray = field(default_factory=bytearray)
    _overflowed: bool = False

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        self.counters["bytes"] += len(data)
        start = 0
        while True:
            z = data.find(b"\x00", start)
            chunk = data[start:] if z < 0 else data[start:z]
            if not self._overflowed:
                if len(self._buf) + len(chunk) > self.max_encoded:
                    self._overflowed = True
                    self.counters["overruns"] += 1
                    self._buf.clear()
                else:
                    self._buf += chunk
            if z < 0:
                return out
            if not self._overflowed and self._buf:
                got = decode_body_bytes(bytes(self._buf))
                if isinstance(got, FrameError):
                    self.counters[got.value] += 1
                else:
                    self.counters["frames"] += 1
                    out.append(got)
            self._buf.clear()
            self._overflowed = False
            start = z + 1

    def reset(self) -> None:
        self._buf.clear()
        self._overflowed = False

    def resync(self) -> None:
        """Drop any partial frame and every byte up to the next 0x00, uncounted: a port just opened or flushed
        is usually in the middle of a frame (the MCU streams all the time), and that tail is not a frame."""
        self._buf.clear()
        self._overflowed = True


def describe(frame: Frame) -> dict[str, Any]:
    """A frame as a plain dict for logs and the CLI."""
    d: dict[str, Any] = {"type": frame.name, "seq": frame.seq}
    try:
        d.update(frame.fields())
    except ProtocolError as exc:
        d["error"] = str(exc)
    return d
