"""The sorting core shared by `edgesort run` and `edgesort demo`: a pipeline FrameTask and its consumer.

    frame ─▶ SortingTask.prepare: find items (colour + components), fixed-scale crops ─▶ NCHW batch
          ─▶ backend.infer ─▶ SortingTask.finish: softmax per crop
          ─▶ Sorter.consume: encoder count at capture time ─▶ belt coordinates ─▶ Tracker
                 ─▶ a confirmed track crossing the decision line, its position trusted: decide() once
                 ─▶ gate? QUEUE_EJECT on the encoder (EjectionScheduler) : default bin
                 ─▶ ItemOutcome to listeners (MQTT item event, the twin's report)

When the MCU's clock jumps against the host's, positions seen around the jump are wrong: `jump_recovery`
puts the tracks and their ejections right.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.bundle import Manifest
from device.config import DeviceConfig
from device.frames import Frame
from device.postprocess import softmax
from device.preprocess import Preprocessor
from device.sorting.clock_guard import ClockGuard
from device.sorting.decision import AMBIGUOUS, UNCERTAIN, Decision, decide
from device.sorting.jump_recovery import JumpRecovery
from device.sorting.locate import Blob, locate
from device.sorting.scheduling import EjectionScheduler
from device.sorting.tracking import MAX_SLIP, Detection, Track, Tracker

log = logging.getLogger(__name__)


class SortingTask:
    """Pipeline FrameTask: item crops in, per-crop class probabilities out."""

    def __init__(self, manifest: Manifest, max_batch: int) -> None:
        if manifest.task != "classify":
            raise ValueError(f"the sorter needs a classify bundle, {manifest.name} is a {manifest.task} model")
        # the pipeline keeps up to queue_size + 2 prepared batches alive; the ring must outlast them
        self.pre = Preprocessor(manifest.input, max_batch, ring=8)
        self.max_batch = max_batch
        out = manifest.outputs[0]
        self.output = out.name
        self.probabilities = out.meaning == "probabilities"

    def prepare(self, frame: Frame) -> tuple[np.ndarray | None, Any]:
        view = locate(frame.image)
        graded, ungraded = view.complete[: self.max_batch], view.partial + view.complete[self.max_batch :]
        if not graded:
            return None, (graded, ungraded)
        return self.pre([view.crop(b) for b in graded]), (graded, ungraded)

    def finish(self, frame: Frame, outputs: dict[str, np.ndarray] | None, ctx: Any) -> list[tuple[Blob, Any]]:
        graded, ungraded = ctx
        probs = []
        if outputs is not None and graded:
            raw = outputs[self.output].astype(np.float32)
            probs = list(raw if self.probabilities else softmax(raw))
        return list(zip(graded, probs, strict=True)) + [(b, None) for b in ungraded]


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What happened to one item: emitted once, when it is decided."""

    track_id: int
    decision: Decision
    outcome: str  # queued | late | full | failed | default | uncertain | ambiguous | too_close | slipping |
    # paused | clock_unstable
    capture_ts: float  # capture time of the frame that triggered the decision
    decided_ts: float
    acked_ts: float | None  # when the MCU acknowledged QUEUE_EJECT
    x_mm: float  # item centre at capture time, from the camera axis
    views: int

    @property
    def latency_ms(self) -> float:
        """Frame capture to the MCU's acknowledgement (or to the decision, for the default bin)."""
        end = self.acked_ts if self.acked_ts is not None else self.decided_ts
        return (end - self.capture_ts) * 1000.0

    def event(self) -> dict[str, object]:
        d = self.decision
        return {
            "item": self.track_id, "grade": d.grade, "confidence": round(d.confidence, 4), "gate": d.gate,
            "outcome": self.outcome, "frames": d.frames, "views": self.views,
            "latency_ms": round(self.latency_ms, 2), "capture_ts": self.capture_ts,
        }


class Sorter:
    """Pipeline consumer: tracks items, decides once per item, schedules ejections, tells listeners."""

    def __init__(self, cfg: DeviceConfig, manifest: Manifest, link: Any, *, views: int = 1,
                 alarm: Callable[..., None] | None = None) -> None:
        self.cfg = cfg
        self.labels = manifest.labels
        unknown = set(cfg.sorting.grade_to_gate) - set(self.labels)
        if unknown:
            raise ValueError(f"sorting.grade_to_gate names grades the model does not know: {sorted(unknown)}")
        self.link = link
        self.views = views
        self.tpm = cfg.line.ticks_per_mm
        self._gate_mm = {g.id: g.distance_mm for g in cfg.line.gates}  # ids are unique (config validates)
        self.mm_per_px = cfg.cameras[0].mm_per_px
        self.tracker = Tracker(cfg.sorting.confirm_frames, cfg.sorting.drop_frames)
        self.scheduler = EjectionScheduler(cfg, link, alarm)
        self.listeners: list[Callable[[ItemOutcome, Frame], None]] = []
        # told (track id, x_mm) when a track decided on a frame placed through a wrong clock mapping is put right:
        # where its item really was on that frame (the twin's report pairs the decision again)
        self.corrections: list[Callable[[int, float], None]] = []
        self.paused = threading.Event()
        self.counts: Counter[str] = Counter()
        self.latencies: deque[float] = deque(maxlen=2000)
        self.frames = 0
        self.last_frame_seq = 0
        self.frames_skipped_reset = 0
        self.host_lock = threading.Lock()  # held per frame; fault injection holds it to freeze the host
        # An MCU reboot restarts its encoder count: positions of earlier frames and tracks are meaningless in
        # the new count, so tracks are dropped (their items go to the default bin) and older frames skipped.
        self.mcu_epoch = getattr(link, "epoch", 0)
        self._reset_ts = 0.0
        self.clock_guard = ClockGuard()
        self.recovery = JumpRecovery(self)
        self.frames_uncertain = 0  # frames placed through a broken clock mapping
        self.frames_shifted = 0  # frames placed by their items, not their encoder count (Tracker.frame_shift)
        if hasattr(link, "add_event_listener"):
            link.add_event_listener(self._on_link_event)

    def belt_mm_at(self, host_ts: float) -> float:
        """Belt travel (mm) at a host time, through the link's clock mapping (right in hindsight after a located
        jump)."""
        return self.link.encoder_count_at(host_ts) / self.tpm

    def ticks_per_s(self) -> float:
        """The belt's speed now, in encoder ticks per second of the MCU's own clock (`link.encoder_speed`, its
        last 100 ms of samples): the speed the pusher will meet. Measured through host times instead (the counts
        at a frame's capture and 100 ms before), a pause of the MCU's clock inside that window read as a slower
        belt, and a pulse centred by half its length of travel started up to that half late: 13-22 mm at
        1.5 m/s after 50-120 ms pauses, in the report's aim errors."""
        return max(0.0, float(self.link.encoder_speed()))

    def _on_link_event(self, kind: str, detail: dict[str, Any]) -> None:
        if kind == "mcu_reset":
            self._reset_ts = time.monotonic()
        elif kind == "clock_jump":
            self.clock_guard.report(detail["since"], detail["detected"], detail["shift_s"],
                                    bool(detail.get("located", False)))

    def consume(self, frame: Frame, result: list[tuple[Blob, Any]], times: object = None) -> None:
        with self.host_lock:
            self._consume(frame, result)

    def _consume(self, frame: Frame, result: list[tuple[Blob, Any]]) -> None:
        self.frames += 1
        self.last_frame_seq = frame.seq
        epoch = getattr(self.link, "epoch", 0)
        if epoch != self.mcu_epoch:
            lost = [t for t in self.tracker.tracks.values() if not t.decided]
            self.tracker.dropped_undecided += len(lost)
            self.tracker.tracks.clear()
            self.mcu_epoch = epoch
            log.warning("MCU rebooted: %d undecided tracks dropped (their items go to the default bin)", len(lost))
        if frame.capture_ts <= self._reset_ts:
            self.frames_skipped_reset += 1
            return
        self.recovery.after_clock_jumps()
        uncertain = self.clock_guard.uncertainty_mm(frame.capture_ts)
        self.frames_uncertain += uncertain > 0
        count = self.link.encoder_count_at(frame.capture_ts)
        belt_mm = count / self.tpm
        half_w = frame.image.shape[1] / 2
        dets = [
            Detection((b.cx - half_w) * self.mm_per_px - belt_mm, b.cy * self.mm_per_px, p, frame.view, b.ambiguous,
                      uncertain)
            for b, p in result
        ]
        shift = self.tracker.frame_shift(dets, belt_mm)
        if shift:  # the items moved together against the encoder count: a clock jump the link has not seen yet
            self.frames_shifted += 1
            belt_mm -= shift
            for d in dets:
                d.u_mm += shift
            log.info("frame %d placed by its items: the encoder count at its capture is %.1f mm off", frame.seq,
                     shift)
        self.tracker.update(dets, belt_mm, frame.capture_ts, self.views)
        self.tracker.merge_coincident(belt_mm)
        line = self.cfg.line.decision_line_mm
        due = []
        for t in list(self.tracker.tracks.values()):
            if t.requeue_gate is not None and t.uncertainty_mm == 0.0:
                self.recovery.requeue(t, t.requeue_gate, t.requeue_held)
            if t.decided or not self.tracker.confirmed(t) or t.uncertainty_mm > 0.0:
                continue
            x_mm = t.predict(belt_mm) + belt_mm
            if x_mm >= line:
                t.decided = True
                t.decided_from_ts = t.last_capture_ts
                t.decided_at_ts = frame.capture_ts
                due.append((t, x_mm))
        if due:
            self._decide(due, frame)
        self.scheduler.reconcile(self.link.encoder_count_at(time.monotonic()))

    def _decide(self, due: list[tuple[Track, float]], frame: Frame) -> None:
        """Decide every track of this frame that reached the decision line; their ejections are queued together
        (several decisions in one frame cost one serial round trip, not one each)."""
        speed = self.ticks_per_s()
        decided: list[tuple[Track, float, Decision, float, str | None]] = []
        to_eject: list[tuple[int, float, int]] = []
        for track, x_mm in due:
            d = decide(track, self.labels, self.cfg.sorting)
            outcome: str | None = None
            if self.paused.is_set():
                outcome = "paused"
            elif d.gate is not None and self.clock_guard.unstable(time.monotonic()):
                outcome = "clock_unstable"  # positions cannot be trusted: default bin
            elif d.gate is None:
                outcome = d.grade if d.grade in (UNCERTAIN, AMBIGUOUS) else "default"
            elif track.drift < -MAX_SLIP:
                outcome = "slipping"  # where it will be at the gate is a guess: default bin
                track.held_gate = d.gate
            elif self.neighbour_in_sweep(track, d.gate, speed):
                outcome = "too_close"  # the pusher would hit a neighbour too: both go to the default bin
                track.held_gate = d.gate
            else:
                to_eject.append((track.id, self.gate_distance(d.gate) - self.belt_at_gate(track, d.gate), d.gate))
            decided.append((track, x_mm, d, time.monotonic(), outcome))
        answers = dict(zip([r[0] for r in to_eject],
                           self.scheduler.schedule_many(to_eject, speed, epoch=self.mcu_epoch), strict=True))
        acked = time.monotonic()
        for track, x_mm, d, decided_ts, outcome in decided:
            queued = outcome is None
            if queued and answers[track.id] == "queued":
                track.eject_gate, track.aimed_from_ts = d.gate, track.decided_from_ts
            o = ItemOutcome(track.id, d, answers[track.id] if queued else str(outcome), frame.capture_ts,
                            decided_ts, acked if queued else None, x_mm, len(track.views_seen))
            self.counts[d.grade] += 1
            self.latencies.append(o.latency_ms)
            for listener in self.listeners:
                try:
                    listener(o, frame)
                except Exception:  # a broken listener (reporting) must never stop the sort
                    log.exception("item listener failed for item %s", track.id)

    def clearance_mm(self, ticks_per_s: float, gate: int) -> float:
        """How close a neighbour's centre may come before the pusher's sweep reaches it (the twin's rule)."""
        line = self.cfg.line
        pulse_ms = next(g.pulse_ms for g in line.gates if g.id == gate)
        travel_mm = ticks_per_s / self.tpm * pulse_ms / 1000.0
        return line.pusher_mm / 2 + travel_mm / 2 + line.clearance_margin_mm

    def gate_distance(self, gate: int) -> float:
        return self._gate_mm[gate]

    def belt_at_gate(self, track: Track, gate: int) -> float:
        """Belt travel (mm) at which the item's centre reaches the gate, its slip included:
        x(b) = u + b + drift * (b - b_seen) = gate  =>  b = (gate - u + drift * b_seen) / (1 + drift)."""
        return (self.gate_distance(gate) - track.u_mm + track.drift * track.belt_mm) / (1.0 + track.drift)

    def neighbour_in_sweep(self, track: Track, gate: int, ticks_per_s: float) -> bool:
        """Would any other item be within the pusher's sweep when it fires for this one? Items tracked now, and
        those that have left the camera's view (an ejection queued again after a clock jump may be queued when
        the item and its neighbours are all past the camera)."""
        room = self.clearance_mm(ticks_per_s, gate)
        b = self.belt_at_gate(track, gate)
        g = self.gate_distance(gate)
        # of the departed, only items: a decided track (an edge sliver's or a split's track that died undecided
        # followed an item tracked on its own), and only while on the belt (one ejected is in its bin)
        departed = [o for o in self.tracker.departed if o.decided and (
            o.eject_gate is None or o.predict(b) + b < self.gate_distance(o.eject_gate) + room)]
        others = [*self.tracker.tracks.values(), *departed]
        return any(abs(o.predict(b) + b - g) < room + o.uncertainty_mm for o in others if o.id != track.id)

    def snapshot(self) -> dict[str, Any]:
        """Pure numbers for telemetry: counts per grade, reject rate, latency, ejection stats."""
        total = sum(self.counts.values())
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        rejected = sum(n for g, n in self.counts.items() if g not in self.cfg.sorting.grade_to_gate)
        return {
            "items": total,
            "counts": dict(self.counts),
            "reject_rate": round(rejected / total, 4) if total else 0.0,
            "decision_latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2),
                                    "p99": round(float(np.percentile(lat, 99)), 2)},
            "ejections": self.scheduler.stats.as_dict(),
            "tracks_dropped_undecided": self.tracker.dropped_undecided,
            "tracks_merged": self.tracker.merged,
            "clock_jumps": self.clock_guard.jumps,
            "clock_jump_bursts": self.clock_guard.bursts,
            "frames_uncertain": self.frames_uncertain,
            "frames_shifted": self.frames_shifted,
        }
