"""The digital twin of a grading line: belt, item spawner, gates that divert what they hit, bins that know.

The encoder is owned by whoever drives the belt (the Python MCU simulator, the real firmware in simavr, or a
FreeEncoder); every item position is derived from the encoder count, so the camera, the MCU and the gates
agree on where things are without sharing a clock:

    encoder count ──▶ item x (mm) = x_spawn + (count - spawn_count) / ticks_per_mm * slip
          │                    │
          ▼                    ▼
    MCU fires gates ──▶ on_gate(gate, on/off, count) ──▶ items under the pusher go to that gate's bin
    camera renders frames at capture time ──▶ Frame(image, capture_ts, meta: truth)
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, urlparse

import numpy as np

from device.grades import DEFAULT_BIN, GRADES, CucumberShape, sample_shape
from device.sim.encoder import Encoder, FreeEncoder
from device.sim.render import BeltBackground, Placement, Sprite, footprint_x, make_sprite

log = logging.getLogger(__name__)

# Twins whose world thread runs. A free-running twin (a bring-up camera, a benchmark) is never stopped by its
# user, and its daemon thread draws new items with OpenCV: one caught inside OpenCV when the interpreter exits
# aborts the process ("terminate called without an active exception"), so they are all stopped at exit.
_running: weakref.WeakSet[Twin] = weakref.WeakSet()


@atexit.register
def _stop_running_twins() -> None:
    for twin in list(_running):
        twin.stop()

SPAWN_X_MM = -320.0  # items appear upstream of the frame's left edge
STROKES_KEPT = 10_000  # pusher strokes remembered for reports (a free-running twin is never stopped)
TICK_S = 0.005  # world bookkeeping period (spawns, speed profile, end of belt)


@dataclass
class TwinParams:
    """Everything that shapes the twin; also parsed from a `sim://?key=value&...` URI."""

    belt_speed_mps: float = 0.5
    rate: float = 2.0  # items per second at the nominal belt speed
    seed: int = 0
    fps: float = 30.0
    width: int = 480
    height: int = 320
    ticks_per_mm: float = 2.0
    noise: float = 3.0  # camera noise sigma (grey levels)
    lighting: float = 1.0  # global light gain
    flicker: float = 0.03  # frame-to-frame light variation (relative sigma)
    gap_mm: float = 15.0  # smallest gap between neighbouring items (0 = touching)
    slip: float = 0.0  # fraction of items that slip on the belt (they move 10-30% slower)
    views: int = 1  # cameras per item (CUCUMBER-9 prototype 2 used 3)
    pusher_mm: float = 40.0  # width of a gate's pusher along the belt
    speed_profile: str = ""  # "t1:v1,t2:v2": belt speed (m/s) from t seconds after start; 0 stops the belt
    stuck_gates: tuple[int, ...] = ()  # fault injection: these gates never move
    # fault injection on the host and MCU (T = s after start): "stall@T:S" (the sorting thread and serial writes
    # stop), "freeze@T:S" (the whole host process stops: every thread, the in-process Python MCU too), "reset@T",
    # "pause@T:S" (the MCU and the belt stop while the host runs on: a starved simulator; the MCU clock jumps)
    faults: str = ""
    grades: tuple[str, ...] = GRADES

    @classmethod
    def from_uri(cls, uri: str) -> TwinParams:
        u = urlparse(uri)
        if u.scheme != "sim":
            raise ValueError(f"not a sim:// URI: {uri}")
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        p = cls()
        names = {f: type(getattr(p, f)) for f in p.__dataclass_fields__}
        aliases = {"belt_speed": "belt_speed_mps", "speed": "belt_speed_mps"}
        for key, raw in q.items():
            name = aliases.get(key, key)
            if name not in names:
                raise ValueError(f"sim:// has no parameter '{key}' (known: {', '.join(sorted(names))})")
            kind = names[name]
            try:
                if kind is tuple:
                    value: object = tuple(
                        (int(x) if name == "stuck_gates" else x) for x in raw.split(",") if x
                    )
                else:
                    value = kind(raw)
            except ValueError as exc:
                raise ValueError(f"sim:// parameter {key}={raw!r}: {exc}") from exc
            setattr(p, name, value)
        return p

    def fault_schedule(self) -> list[tuple[float, str, float]]:
        """[(at_s, kind, seconds)] from `faults`; kinds: 'stall' (the sorting thread and serial writes stop),
        'freeze' (the whole process stops), 'reset' (the MCU reboots) and 'pause' (the MCU and the belt stop)."""
        out = []
        for part in filter(None, self.faults.split(",")):
            kind, _, rest = part.partition("@")
            at, _, dur = rest.partition(":")
            if kind not in ("stall", "freeze", "reset", "pause"):
                raise ValueError(f"sim:// faults: unknown fault '{kind}' "
                                 "(known: stall@T:SECONDS, freeze@T:SECONDS, reset@T, pause@T:SECONDS)")
            out.append((float(at), kind, float(dur or 0.0)))
        return sorted(out)

    def speed_at(self, t: float) -> float:
        v = self.belt_speed_mps
        for part in filter(None, self.speed_profile.split(",")):
            at, speed = part.split(":")
            if t >= float(at):
                v = float(speed)
        return v


@dataclass
class Item:
    id: int
    grade: str
    shape: CucumberShape
    placement: Placement  # x_mm is the spawn position
    spawn_count: int
    slip: float = 1.0  # < 1 for an item that slips
    back_mm: float = 20.0  # footprint behind and ahead of the centre, along the belt
    front_mm: float = 20.0
    bin: str | None = None
    finished_count: int | None = None  # the count at which it reached a bin
    predicted: str | None = None
    gates_fired: list[int] = field(default_factory=list)
    sprites: dict[int, Sprite] = field(default_factory=dict, repr=False)  # per view, drawn on first sight

    def x_at(self, count: float, ticks_per_mm: float) -> float:
        return self.placement.x_mm + (count - self.spawn_count) / ticks_per_mm * self.slip


@dataclass(frozen=True, slots=True)
class Stroke:
    """One stroke of a gate's pusher, as the twin saw it: from energised to released (encoder counts), and the
    items it took (ids)."""

    gate: int
    start: int
    end: int
    took: tuple[int, ...]


class Twin:
    """The conveyor world. Thread-safe: the camera, the MCU simulator and the world thread all call in."""

    def __init__(self, params: TwinParams, gates_mm: dict[int, float], encoder: Encoder | None = None) -> None:
        self.p = params
        self.gates_mm = dict(gates_mm)
        self.end_mm = max(gates_mm.values(), default=0.0) + params.pusher_mm + 150.0
        self.encoder: Encoder = encoder or FreeEncoder()
        self.items: list[Item] = []
        self.finished: list[Item] = []
        self._rng = np.random.default_rng(params.seed)
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._gate_on: dict[int, int] = {}
        self._strokes: deque[Stroke] = deque(maxlen=STROKES_KEPT)
        self._next_pitch = 0.0
        self._prev_back = 0.0
        self._spawning = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._current_speed = -1.0
        self.background = BeltBackground(params.width, params.height, params.seed, params.noise)
        self.frames_rendered = 0

    # -- belt and spawner ---------------------------------------------------------------------------------
    def attach_encoder(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._apply_speed()
        self._thread = threading.Thread(target=self._run, name="twin-world", daemon=True)
        self._thread.start()
        _running.add(self)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        _running.discard(self)

    def stop_spawning(self) -> None:
        self._spawning = False

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def _apply_speed(self) -> None:
        v = self.p.speed_at(self.elapsed())
        if v != self._current_speed:
            self._current_speed = v
            self.encoder.set_speed(v * 1000.0 * self.p.ticks_per_mm)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self.step()

    def step(self) -> None:
        """One bookkeeping step: speed profile, spawning, items leaving the belt's end."""
        self._apply_speed()
        count = self.encoder.count()
        with self._lock:
            if self._spawning:
                last = self.items[-1].x_at(count, self.p.ticks_per_mm) if self.items else None
                if last is None or last - SPAWN_X_MM >= self._next_pitch:
                    self._spawn(count)
            self._push_slipping(count)
            for it in [i for i in self.items if i.x_at(count, self.p.ticks_per_mm) > self.end_mm]:
                it.bin = DEFAULT_BIN
                self._finish(it, count)
            undrawn = [it for it in self.items if len(it.sprites) < self.p.views]
        # New items are drawn here, upstream of the frame and outside the lock, so that the camera's render,
        # which sits between a frame's exposure and its delivery, only pastes (a drawing takes about 1 ms a view)
        for it in undrawn:
            for view in range(self.p.views):
                if view not in it.sprites:
                    it.sprites[view] = make_sprite(it.shape, it.placement, view)

    def _spawn(self, count: int) -> None:
        r = self._rng
        grade = str(r.choice(self.p.grades))
        shape = sample_shape(grade, r)
        views: list[tuple[int, ...]] = []
        for _ in range(shape.defects):
            if self.p.views <= 1:
                views.append((0,))
            else:  # a defect on one side of the fruit is seen by one or two of the cameras
                k = int(r.integers(1, 3))
                views.append(tuple(sorted(int(v) for v in r.choice(self.p.views, k, replace=False))))
        placement = Placement(
            x_mm=SPAWN_X_MM,
            y_mm=float(self.p.height / 2 + r.normal(0, 12)),
            angle_deg=float(r.uniform(-6, 6)),
            bend_sign=int(r.choice([-1, 1])),
            skin_seed=int(r.integers(1 << 30)),
            defect_views=tuple(views),
        )
        slip = float(r.uniform(0.7, 0.9)) if r.random() < self.p.slip else 1.0
        # Items never overlap: the new one starts its own footprint behind the previous one's, plus the gap.
        back, front = footprint_x(shape, placement)
        if self.items:
            prev = self.items[-1]
            x_prev = prev.x_at(count, self.p.ticks_per_mm)
            placement = replace(placement, x_mm=min(SPAWN_X_MM, x_prev - self._prev_back - front - self.p.gap_mm))
        item = Item(next(self._ids), grade, shape, placement, count, slip, back_mm=back, front_mm=front)
        self.items.append(item)
        self._prev_back = back
        # pitch to the next item: the nominal spacing for the rate (the footprint rule keeps them apart)
        self._next_pitch = self.p.belt_speed_mps * 1000.0 / self.p.rate * float(r.uniform(0.8, 1.2))

    def _push_slipping(self, count: int) -> None:
        """Items cannot pass through each other: an item riding the belt pushes a slower one ahead of it.
        The pushed item is re-based at its new place, so it slips again from there once it is free."""
        tpm = self.p.ticks_per_mm
        for i in range(len(self.items) - 1, 0, -1):  # upstream to downstream, so a push carries forward
            behind, ahead = self.items[i], self.items[i - 1]
            need = behind.x_at(count, tpm) + behind.front_mm + ahead.back_mm
            if ahead.x_at(count, tpm) < need:
                ahead.placement = replace(ahead.placement, x_mm=need)
                ahead.spawn_count = count

    def _finish(self, item: Item, count: int) -> None:
        item.finished_count = count
        self.items.remove(item)
        self.finished.append(item)

    # -- gates ------------------------------------------------------------------------------------------
    def on_gate(self, gate: int, energised: bool, count: int) -> None:
        """Called by the MCU (simulator or firmware harness) on every gate output change."""
        if gate in self.p.stuck_gates or gate not in self.gates_mm:
            return
        with self._lock:
            if energised:
                self._gate_on[gate] = count
                return
            start = self._gate_on.pop(gate, None)
            if start is None:
                return
            g = self.gates_mm[gate]
            half = self.p.pusher_mm / 2
            took = []
            for it in list(self.items):
                a = it.x_at(start, self.p.ticks_per_mm)
                b = it.x_at(count, self.p.ticks_per_mm)
                if min(a, b) <= g + half and max(a, b) >= g - half:
                    it.gates_fired.append(gate)
                    it.bin = str(gate)
                    self._finish(it, count)
                    took.append(it.id)
            self._strokes.append(Stroke(gate, start, count, tuple(took)))

    def strokes_seen(self) -> list[Stroke]:
        """The pusher strokes so far, oldest first (the last STROKES_KEPT)."""
        with self._lock:
            return list(self._strokes)

    # -- camera -----------------------------------------------------------------------------------------
    def exposure(self) -> tuple[float, int]:
        """(host time, encoder count) of one instant, as the belt's owner tells it (`Encoder.exposure`). A time
        and a count read one after the other would put an item in the wrong place whenever the thread was
        preempted between them (25 mm per 50 ms at 0.5 m/s); a simulator running late, or paused, shows an
        earlier instant than now, and the camera stamps the picture with that instant."""
        t, count = self.encoder.exposure()
        return float(t), int(count)

    def render(self, view: int = 0, count: int | None = None) -> tuple[np.ndarray, int, list[dict[str, object]]]:
        """A frame of what the camera sees at `count` (now when None): (BGR image, encoder count, truth)."""
        if count is None:
            count = self.encoder.count()
        gain = self.p.lighting * (1.0 + self.p.flicker * float(self._rng.normal()))
        img = self.background.frame(gain)
        truth: list[dict[str, object]] = []
        half_w = self.p.width / 2
        with self._lock:
            visible = [(it, it.x_at(count, self.p.ticks_per_mm)) for it in self.items]
        for it, x in visible:
            if -half_w - 200 < x < half_w + 200:
                # only items that reach into the frame (footprint plus the anti-aliased edge), each drawn once
                if x + it.front_mm > -half_w - 2 and x - it.back_mm < half_w + 2:
                    sprite = it.sprites.get(view)
                    if sprite is None:
                        sprite = it.sprites[view] = make_sprite(it.shape, it.placement, view)
                    sprite.paste(img, x, gain)
                truth.append({"id": it.id, "x_mm": x, "grade": it.grade})
        self.frames_rendered += 1
        return self.background.add_noise(img, self.frames_rendered), count, truth

    def item_near(self, x_mm: float, count: int, tolerance_mm: float = 30.0) -> Item | None:
        """The item whose centre was nearest `x_mm` at `count`, among those on the belt then: the ones still on it
        and the ones that reached a bin since (the twin's truth, for reports)."""
        tpm = self.p.ticks_per_mm
        with self._lock:
            there = [it for it in (*self.items, *self.finished)
                     if it.finished_count is None or it.finished_count >= count]
        best = min(there, key=lambda it: abs(it.x_at(count, tpm) - x_mm), default=None)
        if best is None or abs(best.x_at(count, tpm) - x_mm) > tolerance_mm:
            return None
        return best

    def on_belt(self) -> int:
        with self._lock:
            return len(self.items)
