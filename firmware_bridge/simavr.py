"""The real firmware ELF under simavr (harness/harness.c), with the same interface as McuSimulator.

    sim = FirmwareSimulator(on_gate=cb)   # cb(gate, energised, count), from the harness's gate pin log
    port = sim.start()                    # builds firmware and harness if needed (make), returns the pty path
    sim.set_speed(ticks_per_s); sim.count(); sim.reset(); sim.stop()

The harness drives the encoder pin in simulated real time; count() reads the edge count the harness keeps in
a memory-mapped file, so it costs no round trip. As with a real MCU, the firmware's own count restarts at 0
after reset(), while count() and the gate log keep counting encoder edges.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.protocol import DEFAULT_BAUD

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
FIRMWARE_DIR = HERE / "firmware"
HARNESS_DIR = HERE / "harness"
ELF_NAME = "edgesort_fw.elf"
LOG_DEPTH = 10_000
START_TIMEOUT_S = 10.0  # harness start: exec, ELF load, pty; seconds only on a loaded machine

GateCallback = Callable[[int, bool, int], None]


class SimavrError(OSError):
    """The firmware or the harness cannot be built or started; the message says which tool is missing."""


@dataclass(frozen=True)
class GateChange:
    gate: int
    energised: bool
    count: int  # encoder edges (the harness's count) at the change
    cycle: int  # simulated CPU cycle (16 MHz) of the change


def build(build_dir: Path | None = None, *, baud: int = DEFAULT_BAUD, quiet: bool = True) -> tuple[Path, Path]:
    """make the firmware ELF for a UART rate and the harness (incremental); returns (elf, harness). Into
    build_dir, else $EDGESORT_FIRMWARE_BUILD, else firmware/build and harness/build beside the sources; a rate
    other than the default gets its own firmware folder, so that runs alternating rates (bench sort --bauds)
    do not compile again each time (the Makefile recompiles a folder built for another rate)."""
    env = os.environ.get("EDGESORT_FIRMWARE_BUILD")
    root = Path(build_dir) if build_dir else Path(env) if env else None
    for tool, why in (("make", "make"), ("avr-gcc", "gcc-avr and avr-libc"), ("gcc", "gcc")):
        if shutil.which(tool) is None:
            raise SimavrError(f"building the firmware simulator needs '{tool}' (apt: {why})")
    if not Path("/usr/include/simavr/sim_avr.h").exists():
        raise SimavrError("building the simavr harness needs the simavr headers (apt: libsimavr-dev)")
    if root is not None:
        fw_build, h_build = root.resolve() / "firmware", root.resolve() / "harness"
    else:
        fw_build, h_build = FIRMWARE_DIR / "build", HARNESS_DIR / "build"
    if baud != DEFAULT_BAUD:
        fw_build = fw_build.with_name(f"{fw_build.name}-{baud}baud")
    for src, out, extra in ((FIRMWARE_DIR, fw_build, [f"BAUD={baud}"]), (HARNESS_DIR, h_build, [])):
        res = subprocess.run(["make", "-C", str(src), f"BUILD={out}", *extra], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            raise SimavrError(f"make in {src} failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
        if not quiet:
            print(res.stdout, end="")
    return fw_build / ELF_NAME, h_build / "harness"


class FirmwareSimulator:
    def __init__(
        self,
        on_gate: GateCallback | None = None,
        *,
        elf: Path | None = None,
        harness: Path | None = None,
        build_dir: Path | None = None,
        baud: int = DEFAULT_BAUD,
    ) -> None:
        self.on_gate = on_gate
        self.baud = baud  # the firmware's UART rate: simavr times each byte by it
        self._elf = elf
        self._harness = harness
        self._build_dir = build_dir
        self._proc: subprocess.Popen[str] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._mm: mmap.mmap | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._speed = 0.0
        self.port = ""
        self.gate_log: deque[GateChange] = deque(maxlen=LOG_DEPTH)  # the last gate changes, bounded
        self.resets = 0
        self.stats: dict[str, str] = {}

    def start(self) -> str:
        if self._elf is None or self._harness is None:
            self._elf, self._harness = build(self._build_dir, baud=self.baud)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgesort-simavr-")
        count_file = Path(self._tmp.name) / "count"
        self._log_path = Path(self._tmp.name) / "harness.log"
        with open(self._log_path, "w") as stderr:
            self._proc = subprocess.Popen(
                [str(self._harness), str(self._elf), "--count-file", str(count_file)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
            )
        self._reader = threading.Thread(target=self._read, name="simavr-harness", daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT_S) or not self.port:
            self.stop()
            raise SimavrError(f"the simavr harness did not start: {self._harness_log()}")
        fd = os.open(count_file, os.O_RDONLY)
        try:
            self._mm = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        if self._speed:
            self.set_speed(self._speed)
        return self.port

    def _harness_log(self) -> str:
        with contextlib.suppress(OSError):
            return self._log_path.read_text().strip()[-500:] or "no output"
        return "no output"

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = line.split()
            if not parts:
                continue
            kind = parts[0]
            if kind == "G" and len(parts) == 5:
                ch = GateChange(int(parts[2]), parts[3] == "1", int(parts[4]), int(parts[1]))
                with self._lock:
                    self.gate_log.append(ch)
                if self.on_gate is not None:
                    try:
                        self.on_gate(ch.gate, ch.energised, ch.count)
                    except Exception:  # a failing observer must not stop the log
                        log.exception("on_gate callback failed")
            elif kind == "PTY" and len(parts) == 2:
                self.port = parts[1]
            elif kind == "READY":
                self._ready.set()
            elif kind == "R":
                self.resets += 1
            elif kind == "STATS":
                self.stats = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        self._ready.set()  # the harness exited: wake start() if it still waits

    def _send(self, cmd: str) -> None:
        if self._proc is None or self._proc.stdin is None or self._proc.poll() is not None:
            raise SimavrError(f"the simavr harness is not running: {self._harness_log()}")
        try:
            self._proc.stdin.write(cmd + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SimavrError(f"the simavr harness is gone: {exc}") from exc

    def set_speed(self, ticks_per_s: float) -> None:
        if ticks_per_s < 0:
            raise ValueError("the belt runs forward only: ticks_per_s must be >= 0")
        self._speed = float(ticks_per_s)
        if self._proc is not None:
            self._send(f"speed {ticks_per_s:.6f}")

    @property
    def speed(self) -> float:
        return self._speed

    def count(self) -> int:
        if self._mm is None:
            return 0
        return int(struct.unpack_from("<Q", self._mm, 0)[0])

    def exposure(self) -> tuple[float, int]:
        """(host time.monotonic(), count) of one instant of the simulated world: the count the harness published
        and the time its pacing had that instant due. A harness running late (a starved machine) shows the world
        as it was then, and a camera stamps its picture with the moment the picture shows; stamped with the
        time of reading instead, every frame would be placed up to the lag's belt travel off, with no clock jump
        to say so. The harness writes under a seqlock (an odd sequence number: writing; read again)."""
        mm = self._mm
        if mm is None:
            return time.monotonic(), 0
        for _ in range(100):
            seq = struct.unpack_from("<Q", mm, 24)[0]
            count, _cycle, due_ns = struct.unpack_from("<QQQ", mm, 0)
            if seq % 2 == 0 and struct.unpack_from("<Q", mm, 24)[0] == seq:
                break
        now = time.monotonic()
        # before its pacing starts the harness has no due time; it runs at most 200 us ahead of the wall clock
        return (min(now, due_ns / 1e9) if due_ns else now), int(count)

    def reset(self) -> None:
        """Pulls the MCU's reset pin: the firmware reboots (queue lost, gates released, count from 0)."""
        self._send("reset")

    def pause(self, seconds: float) -> None:
        """Fault injection: the harness stops for `seconds` and then pauses the simulated world (MCU and belt)
        by as much, as it does when a loaded machine does not run it; the MCU's clock then lags the host's."""
        if not 0 < seconds <= 10:
            raise ValueError("pause: seconds must be in (0, 10]")
        self._send(f"pause {seconds:.6f}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.stdin.close()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()  # the harness ignored quit: end only our own child
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FirmwareSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def gate_changes(self) -> list[GateChange]:
        with self._lock:
            return list(self.gate_log)
