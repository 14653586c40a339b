"""The pure codec against the shared vectors, and its properties under hypothesis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import protocol as p
from firmware_bridge.protocol import FrameDecoder, MsgType

VECTORS = Path(p.__file__).resolve().parent / "vectors"


def load(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())


@pytest.mark.parametrize("v", load("crc16.json"), ids=lambda v: v["name"])
def test_crc16_vectors(v: dict) -> None:
    assert p.crc16(bytes.fromhex(v["data_hex"])) == v["crc"]


@pytest.mark.parametrize("v", load("cobs.json"), ids=lambda v: v["name"])
def test_cobs_vectors(v: dict) -> None:
    data, enc = bytes.fromhex(v["data_hex"]), bytes.fromhex(v["encoded_hex"])
    assert p.cobs_encode(data) == enc
    assert p.cobs_decode(enc) == data


@pytest.mark.parametrize("v", load("frames.json"), ids=lambda v: v["name"])
def test_frame_vectors(v: dict) -> None:
    payload = p.pack_payload(v["type"], **v["fields"])
    assert payload.hex() == v["payload_hex"]
    assert p.encode(v["type"], v["seq"], payload).hex() == v["frame_hex"]
    frame = p.decode(bytes.fromhex(v["frame_hex"]))
    assert (frame.type, frame.seq, frame.fields()) == (v["type"], v["seq"], v["fields"])


@pytest.mark.parametrize("v", load("invalid.json"), ids=lambda v: v["name"])
def test_invalid_vectors_rejected_and_counted(v: dict) -> None:
    dec = FrameDecoder()
    good = bytes.fromhex(load("frames.json")[2]["frame_hex"])
    assert dec.feed(bytes.fromhex(v["frame_hex"]) + good) == [p.decode(good)]
    assert dec.counters[v["error"]] == 1
    assert (
        sum(dec.counters[k] for k in ("crc_errors", "cobs_errors", "short_frames", "version_errors", "overruns")) == 1
    )


def test_every_message_type_has_a_vector() -> None:
    assert {v["type"] for v in load("frames.json")} == {int(t) for t in MsgType}


def test_every_single_bit_flip_of_every_vector_is_rejected() -> None:
    for v in load("frames.json"):
        wire = bytes.fromhex(v["frame_hex"])
        original = p.decode(wire)
        for i in range(len(wire) * 8):
            bad = bytearray(wire)
            bad[i // 8] ^= 1 << (i % 8)
            # + 0x00: a flipped delimiter then ends the frame one byte later
            assert FrameDecoder().feed(bytes(bad) + b"\x00") == [], (v["name"], i)
        assert FrameDecoder().feed(wire) == [original]


def test_payload_layout_errors() -> None:
    with pytest.raises(p.ProtocolError):
        p.pack_payload(MsgType.QUEUE_EJECT, item_id=1, gate=1)
    with pytest.raises(p.ProtocolError):
        p.pack_payload(MsgType.QUEUE_EJECT, item_id=-1, gate=1, fire_at_count=0, pulse_ms=1)
    with pytest.raises(p.ProtocolError):
        p.unpack_payload(MsgType.QUEUE_EJECT, b"\x00" * 3)
    with pytest.raises(p.ProtocolError):
        p.encode(MsgType.HELLO, 0, b"\x01" * (p.MAX_PAYLOAD + 1))


# ---- properties -----------------------------------------------------------------------------------------

frames_st = st.builds(
    p.Frame,
    type=st.integers(0, 255),
    seq=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=p.MAX_PAYLOAD),
)


def wire(f: p.Frame) -> bytes:
    return p.encode(f.type, f.seq, f.payload)


@given(st.binary(max_size=600))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    enc = p.cobs_encode(data)
    assert 0 not in enc
    assert p.cobs_decode(enc) == data
    assert len(enc) <= len(data) + 1 + len(data) // 254


@given(frames_st)
def test_round_trip(f: p.Frame) -> None:
    w = wire(f)
    assert len(w) <= p.MAX_ENCODED + 1
    assert w.count(0) == 1 and w.endswith(b"\x00")
    assert FrameDecoder().feed(w) == [f]


@given(st.lists(st.tuples(st.binary(max_size=80), frames_st), max_size=8), st.binary(max_size=80))
def test_garbage_between_frames(parts: list[tuple[bytes, p.Frame]], tail: bytes) -> None:
    """Garbage may eat at most the frame it touches: a frame after a 0x00 always comes through."""
    dec = FrameDecoder()
    stream = b""
    for garbage, f in parts:
        stream += garbage + b"\x00" + wire(f)
    got = dec.feed(stream + tail)
    assert got[: len(parts)] == [f for _, f in parts]


@given(st.lists(frames_st, min_size=1, max_size=6), st.data())
def test_random_chunking(fs: list[p.Frame], data: st.DataObject) -> None:
    stream = b"".join(wire(f) for f in fs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    dec = FrameDecoder()
    got: list[p.Frame] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        got += dec.feed(stream[prev:c])
        prev = c
    assert got == fs
    assert dec.counters["frames"] == len(fs)


@given(frames_st, st.data())
def test_truncation_rejected(f: p.Frame, data: st.DataObject) -> None:
    w = wire(f)
    cut = data.draw(st.integers(1, len(w) - 2))
    dec = FrameDecoder()
    assert dec.feed(w[:cut] + b"\x00") == []
    assert dec.feed(w) == [f]  # the next frame is unaffected


def _structure_bytes(w: bytes) -> set[int]:
    """Indexes of the COBS code bytes and the delimiter of a wire frame."""
    idx, i = {len(w) - 1}, 0
    while i < len(w) - 1:
        idx.add(i)
        i += w[i]
    return idx


@settings(deadline=None)  # ~500 decodes per example: no per-example deadline on a shared machine
@given(frames_st, st.data())
def test_every_single_bit_flip_in_the_body_rejected(f: p.Frame, data: st.DataObject) -> None:
    """Guaranteed: a flip that leaves the COBS structure alone is a 1-bit body error, which CRC-16 always
    detects. (Flips that move a zero are caught by the strict COBS decoder or by the CRC with 1 - 2**-16: see
    the derandomized test below and PROTOCOL.md.)"""
    w = wire(f)
    structure = _structure_bytes(w)
    for i in range(len(w) * 8):
        if i // 8 in structure or w[i // 8] ^ (1 << (i % 8)) == 0:
            continue
        bad = bytearray(w)
        bad[i // 8] ^= 1 << (i % 8)
        assert FrameDecoder().feed(bytes(bad)) == [], i


@settings(max_examples=60, derandomize=True, deadline=None)
@given(frames_st)
def test_every_single_bit_flip_rejected(f: p.Frame) -> None:
    """Every bit of the frame, the delimiter and code bytes included. Derandomized: a structural flip passes
    with probability 2**-16 (measured 13 in 5.9 million random flips), so a fresh random draw would make this
    test flaky without telling anything new; this fixed set and the vectors hold no such collision."""
    w = wire(f)
    for i in range(len(w) * 8):
        bad = bytearray(w)
        bad[i // 8] ^= 1 << (i % 8)
        assert FrameDecoder().feed(bytes(bad) + b"\x00") == [], i


@given(frames_st, frames_st)
def test_frame_hidden_in_payload_is_not_a_frame(inner: p.Frame, outer: p.Frame) -> None:
    hidden = wire(inner)[: p.MAX_PAYLOAD]
    o = p.Frame(outer.type, outer.seq, hidden)
    assert FrameDecoder().feed(b"\x00" + wire(o)) == [o]


@given(st.integers(1, 400))
def test_bounded_buffer_overrun_then_resync(n: int) -> None:
    dec = FrameDecoder()
    f = p.Frame(MsgType.HEARTBEAT, 7)
    got = dec.feed(b"\x01" * n + b"\x00" + wire(f))
    assert got == [f]
    assert dec.counters["overruns"] == (1 if n > p.MAX_ENCODED else 0)
    assert len(dec._buf) == 0
