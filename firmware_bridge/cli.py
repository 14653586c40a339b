"""`edgesort bridge ping|status|fire|sim`: bring-up of the MCU link from a terminal.

Registration is light (argparse only); the link and simulators are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from typing import Any

from firmware_bridge.protocol import DEFAULT_BAUD

DEFAULT_PORT = "/dev/ttyUSB0"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bridge", help="talk to the gate MCU: ping, status, test-fire, simulators")
    sub = parser.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)

    def port_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", default=DEFAULT_PORT, help="pyserial URL: /dev/ttyUSB0, /dev/pts/3, spy://...")
        p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help="the firmware's UART rate (make BAUD=)")

    ping = sub.add_parser("ping", help="heartbeat round trips: min/p50/max in ms")
    port_args(ping)
    ping.add_argument("--count", type=int, default=20)
    ping.set_defaults(func=_ping)

    status = sub.add_parser("status", help="the MCU's state and counters, and the host's")
    port_args(status)
    status.set_defaults(func=_status)

    fire = sub.add_parser("fire", help="energise one gate now for a test pulse")
    port_args(fire)
    fire.add_argument("--gate", type=int, required=True)
    fire.add_argument("--pulse-ms", type=int, default=100)
    fire.set_defaults(func=_fire)

    sim = sub.add_parser("sim", help="start an MCU simulator and print its pty path (Ctrl-C stops it)")
    sim.add_argument("--firmware", action="store_true", help="the real firmware ELF in simavr, not the Python MCU")
    sim.add_argument("--speed", type=float, default=1000.0, help="belt encoder speed in ticks per second")
    sim.add_argument("--log-gates", action="store_true", help="print every gate change")
    sim.set_defaults(func=_sim)


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    print(f"edgesort bridge {args.bridge_command}: {exc}", file=sys.stderr)
    return 1


def _ping(args: argparse.Namespace) -> int:
    from firmware_bridge.link import BridgeError, BridgeLink

    try:
        with BridgeLink(args.port, baud=args.baud) as link:
            rtts = []
            for _ in range(args.count):
                rtts.append(link.ping() * 1000)
                time.sleep(0.01)
            info = link.info
    except BridgeError as exc:
        return _fail(args, exc)
    assert info is not None
    fw = f"{info.fw_version >> 8}.{info.fw_version & 0xFF}"
    print(
        f"MCU on {args.port}: protocol {info.proto}, firmware {fw}, "
        f"{info.gate_count} gates, queue {info.queue_capacity}"
    )
    print(
        f"{len(rtts)} round trips: min {min(rtts):.2f} ms, p50 {statistics.median(rtts):.2f} ms, max {max(rtts):.2f} ms"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from firmware_bridge.link import BridgeError, BridgeLink

    try:
        with BridgeLink(args.port, baud=args.baud) as link:
            mcu = link.status()
            host = link.counters
    except BridgeError as exc:
        return _fail(args, exc)
    print("MCU:  " + "  ".join(f"{k}={v}" for k, v in mcu.items()))
    print("host: " + "  ".join(f"{k}={v}" for k, v in host.items()))
    return 0


def _fire(args: argparse.Namespace) -> int:
    from firmware_bridge.link import BridgeError, BridgeLink

    try:
        with BridgeLink(args.port, baud=args.baud) as link:
            link.test_pulse(args.gate, args.pulse_ms)
            time.sleep(args.pulse_ms / 1000)  # stay linked for the pulse: closing sends SAFE, which ends it
    except (BridgeError, ValueError) as exc:
        return _fail(args, exc)
    print(f"gate {args.gate} energised for {args.pulse_ms} ms")
    return 0


def _sim(args: argparse.Namespace) -> int:
    def log_gate(gate: int, on: bool, count: int) -> None:
        if args.log_gates:
            print(f"gate {gate} {'ON ' if on else 'off'} at count {count}", flush=True)

    sim: Any
    if args.firmware:
        from firmware_bridge.simavr import FirmwareSimulator, SimavrError

        sim = FirmwareSimulator(on_gate=log_gate)
        try:
            port = sim.start()
        except SimavrError as exc:
            return _fail(args, exc)
    else:
        from firmware_bridge.mcu_sim import McuSimulator

        sim = McuSimulator(on_gate=log_gate)
        port = sim.start()
    sim.set_speed(args.speed)
    print(port, flush=True)

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # systemd/kill: stop the simulator as Ctrl-C does

    signal.signal(signal.SIGTERM, stop_on_term)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0
