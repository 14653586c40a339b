"""Writes frames.json and invalid.json from protocol.py (run after a deliberate protocol change, then review
the diff). crc16.json and cobs.json are independent anchors (the CRC catalogue check value, Wikipedia's COBS
examples) and are written by hand, so the Python codec cannot silently agree with itself.

    .venv/bin/python firmware_bridge/vectors/generate.py
"""

from __future__ import annotations

import json
from pathlib import Path

from firmware_bridge import protocol as p
from firmware_bridge.protocol import MsgType

HERE = Path(__file__).resolve().parent

EXAMPLES: list[tuple[str, MsgType, int, dict[str, int]]] = [
    ("hello", MsgType.HELLO, 1, {}),
    ("heartbeat", MsgType.HEARTBEAT, 2, {}),
    (
        "queue_eject",
        MsgType.QUEUE_EJECT,
        3,
        {"item_id": 42, "gate": 3, "fire_at_count": 123456, "pulse_ms": 40},
    ),
    (
        "queue_eject_zeros",
        MsgType.QUEUE_EJECT,
        0x0100,
        {"item_id": 0, "gate": 0, "fire_at_count": 0, "pulse_ms": 1},
    ),
    (
        "queue_eject_max",
        MsgType.QUEUE_EJECT,
        0xFFFF,
        {"item_id": 0xFFFFFFFF, "gate": 7, "fire_at_count": 0xFFFFFFFF, "pulse_ms": 0xFFFF},
    ),
    ("cancel", MsgType.CANCEL, 4, {"item_id": 0x01020304}),
    ("safe", MsgType.SAFE, 5, {}),
    ("status", MsgType.STATUS, 6, {}),
    ("test_pulse", MsgType.TEST_PULSE, 7, {"gate": 5, "pulse_ms": 250}),
    ("configure", MsgType.CONFIGURE, 8, {"stream_period_ms": 10}),
    (
        "hello_reply",
        MsgType.HELLO_REPLY,
        0,
        {
            "acked_seq": 1,
            "proto": 1,
            "fw_version": 0x0100,
            "queue_capacity": 32,
            "gate_count": 8,
            "reset_cause": 1,
            "mcu_us": 1_000_000,
            "count": 0,
        },
    ),
    (
        "heartbeat_reply",
        MsgType.HEARTBEAT_REPLY,
        1,
        {"acked_seq": 2, "state": 1, "queue_depth": 3, "mcu_us": 0xDEADBEEF, "count": 777},
    ),
    (
        "queue_reply_queued",
        MsgType.QUEUE_REPLY,
        2,
        {"acked_seq": 3, "result": 0, "queue_depth": 1, "count": 1000},
    ),
    (
        "queue_reply_late",
        MsgType.QUEUE_REPLY,
        3,
        {"acked_seq": 3, "result": 1, "queue_depth": 0, "count": 200000},
    ),
    (
        "queue_reply_full",
        MsgType.QUEUE_REPLY,
        4,
        {"acked_seq": 9, "result": 2, "queue_depth": 32, "count": 5},
    ),
    ("cancel_reply", MsgType.CANCEL_REPLY, 5, {"acked_seq": 4, "result": 5}),
    ("safe_reply", MsgType.SAFE_REPLY, 6, {"acked_seq": 5, "result": 0, "flushed": 2}),
    (
        "status_reply",
        MsgType.STATUS_REPLY,
        7,
        {
            "acked_seq": 6,
            "state": 1,
            "queue_depth": 2,
            "mcu_us": 123456789,
            "count": 98765,
            "gates": 0x81,
            "reset_cause": 8,
            "rx_frames": 1000,
            "tx_frames": 2000,
            "crc_errors": 3,
            "cobs_errors": 4,
            "overruns": 5,
            "seq_gaps": 6,
            "duplicates": 7,
            "fired": 900,
            "late": 8,
            "full": 9,
            "failsafes": 10,
        },
    ),
    ("test_pulse_reply", MsgType.TEST_PULSE_REPLY, 8, {"acked_seq": 7, "result": 3}),
    ("configure_reply", MsgType.CONFIGURE_REPLY, 9, {"acked_seq": 8, "result": 0}),
    ("boot", MsgType.BOOT, 0, {"reset_cause": 2, "fw_version": 0x0100, "proto": 1}),
    ("encoder", MsgType.ENCODER, 10, {"mcu_us": 10_000, "count": 0x00FF00FF}),
    (
        "fired",
        MsgType.FIRED,
        11,
        {"item_id": 42, "gate": 3, "target": 123456, "actual": 123456, "mcu_us": 5_000_000},
    ),
    ("failsafe", MsgType.FAILSAFE, 12, {"reason": 1, "flushed": 4}),
    ("nak", MsgType.NAK, 13, {"acked_seq": 0x1234, "result": 6, "bad_type": 0x42}),
]


def frames() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for name, t, seq, fields in EXAMPLES:
        payload = p.pack_payload(t, **fields)
        out.append(
            {
                "name": name,
                "type": int(t),
                "seq": seq,
                "fields": fields,
                "payload_hex": payload.hex(),
                "body_hex": p.encode_body(t, seq, payload).hex(),
                "frame_hex": p.encode(t, seq, payload).hex(),
            }
        )
    return out


def invalid() -> list[dict[str, str]]:
    payload = p.pack_payload(MsgType.QUEUE_EJECT, item_id=42, gate=3, fire_at_count=123456, pulse_ms=40)
    body = p.encode_body(MsgType.QUEUE_EJECT, 3, payload)
    flipped = bytearray(body)
    flipped[6] ^= 0x01
    bad_crc = bytearray(body)
    bad_crc[-1] ^= 0x80
    v2 = p.encode_body(MsgType.HEARTBEAT, 1, b"", version=2)
    return [
        {
            "name": "payload_bit_flip",
            "frame_hex": (p.cobs_encode(bytes(flipped)) + b"\0").hex(),
            "error": "crc_errors",
        },
        {
            "name": "crc_bit_flip",
            "frame_hex": (p.cobs_encode(bytes(bad_crc)) + b"\0").hex(),
            "error": "crc_errors",
        },
        {"name": "truncated", "frame_hex": (p.cobs_encode(body[:-3]) + b"\0").hex(), "error": "crc_errors"},
        {"name": "too_short", "frame_hex": (p.cobs_encode(body[:5]) + b"\0").hex(), "error": "short_frames"},
        {"name": "cobs_code_past_end", "frame_hex": "0a0102030400", "error": "cobs_errors"},
        {"name": "wrong_version", "frame_hex": (p.cobs_encode(v2) + b"\0").hex(), "error": "version_errors"},
        {"name": "overrun", "frame_hex": ("01" * (p.MAX_ENCODED + 1)) + "00", "error": "overruns"},
    ]


def main() -> None:
    (HERE / "frames.json").write_text(json.dumps(frames(), indent=1) + "\n")
    (HERE / "invalid.json").write_text(json.dumps(invalid(), indent=1) + "\n")


if __name__ == "__main__":
    main()
