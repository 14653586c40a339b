"""A sorting line assembled from the config: what `edgesort run` and `edgesort demo` both start.

Start order (each step refuses with one sentence if it cannot be met): bundle (verified) ─▶ backend ─▶
the twin and its MCU simulator when the camera is `sim://` and the bridge port is `sim` ─▶ serial link
(handshake) ─▶ geometry check against the measured decision latency ─▶ fleet reporter ─▶ pipeline.
Stop order is the reverse, and the MCU is left in its safe state (gates de-energised, queue flushed).
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from device import __version__
from device.bundle import Bundle, verify_bundle
from device.config import DeviceConfig, check_geometry
from device.errors import ConfigError
from device.frames import Frame
from device.sorting.sorter import ItemOutcome, Sorter, SortingTask

log = logging.getLogger(__name__)

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "assets" / "demo_bundle"


def read_temperatures() -> dict[str, float]:
    """Thermal zones in degrees C (Jetson: CPU-therm, GPU-therm, ...); empty where the kernel has none."""
    out: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            out[(zone / "type").read_text().strip()] = int((zone / "temp").read_text()) / 1000.0
        except (OSError, ValueError):
            continue
    return out


def resolve_bundle_path(p: Path) -> Path:
    return DEMO_BUNDLE if str(p) == "demo" else p


class SortingLine:
    def __init__(self, cfg: DeviceConfig, *, firmware: bool = False, mqtt_enabled: bool = True) -> None:
        self.cfg = cfg
        self.firmware = firmware
        self.mqtt_enabled = mqtt_enabled
        self.twin: Any = None
        self.mcu_sim: Any = None
        self.link: Any = None
        self.backend: Any = None
        self.pipeline: Any = None
        self.reporter: Any = None
        self.sorter: Sorter | None = None
        self.bundle: Bundle | None = None
        self.latest_frame: Frame | None = None
        self.started_ts = 0.0
        self.mcu_safe = False  # set once the MCU acknowledged SAFE on the way out
        self.item_events = 0  # item events handed to the reporter (each gets a seq)
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._report_thread: threading.Thread | None = None

    # -- start ------------------------------------------------------------------------------------------
    def open(self) -> None:
        from device.backends.base import create_backend

        cfg = self.cfg
        m = cfg.model
        self.bundle = verify_bundle(resolve_bundle_path(m.bundle), require_signature=m.require_signature,
                                    trusted_keys=list(m.trusted_keys))
        log.info("model %s (%s)", self.bundle.manifest.model_id(), self.bundle.root)
        self.backend = create_backend(self.bundle, m.backend, threads=m.threads, precision=m.precision,
                                      dla_core=m.dla_core, engine_cache=cfg.paths.engine_cache)
        source = self._open_camera_and_mcu()
        self._open_link()
        task = SortingTask(self.bundle.manifest, m.batch)
        views = getattr(source, "views", 1)
        self.sorter = Sorter(cfg, self.bundle.manifest, self.link, views=views, alarm=self._alarm)
        check_geometry(cfg, self.measure_decision_latency_ms(task))
        self._open_reporter()
        self._report_thread = threading.Thread(target=self._report_loop, name="item-events", daemon=True)
        self._report_thread.start()
        self.sorter.listeners.append(self._report_item)
        from device.pipeline import Pipeline

        self.pipeline = Pipeline(source, self.backend, task, self._consume)
        if self.twin:  # the belt starts moving only once everything that watches it is up
            self.twin.start()
        self.pipeline.start()
        if self.twin and self.twin.p.faults:
            threading.Thread(target=self._inject_faults, name="fault-injection", daemon=True).start()
        self.started_ts = time.monotonic()

    def _open_camera_and_mcu(self) -> Any:
        from device.capture.base import open_source

        cam = self.cfg.cameras[0]
        sim_line = cam.uri.startswith("sim://")
        if sim_line:
            from device.sim import Twin, TwinParams, open_camera, register_twin

            params = TwinParams.from_uri(cam.uri)
            params.ticks_per_mm = self.cfg.line.ticks_per_mm
            params.pusher_mm = self.cfg.line.pusher_mm
            self.twin = Twin(params, {g.id: g.distance_mm for g in self.cfg.line.gates})
            register_twin(cam.uri, self.twin)
        if self.cfg.bridge.port == "sim":
            on_gate = self.twin.on_gate if self.twin else None
            if self.firmware:  # the firmware built for the configured rate: simavr times its bytes by it
                from firmware_bridge.simavr import FirmwareSimulator

                self.mcu_sim = FirmwareSimulator(on_gate=on_gate, baud=self.cfg.bridge.baud)
            else:  # the Python MCU answers at once: no wire time
                from firmware_bridge.mcu_sim import McuSimulator

                self.mcu_sim = McuSimulator(on_gate=on_gate)
            self.port = self.mcu_sim.start()
            if self.twin:
                self.twin.attach_encoder(self.mcu_sim)
        else:
            self.port = self.cfg.bridge.port
        if self.twin:
            return open_camera(cam.uri, name=cam.name)
        return open_source(cam.uri, name=cam.name, width=cam.width, height=cam.height, fps=cam.fps)

    def _open_link(self) -> None:
        from firmware_bridge.link import BridgeLink

        b = self.cfg.bridge
        self.link = BridgeLink(self.port, baud=b.baud, ack_timeout_s=b.ack_timeout_ms / 1000.0, retries=b.retries)
        self.link.connect()

    def _open_reporter(self) -> None:
        from device.fleet.reporter import FleetReporter

        cfg = self.cfg
        if not self.mqtt_enabled:
            cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"url": None})})
        versions = {"edgesort": __version__, "model": self.bundle.manifest.model_id() if self.bundle else ""}
        self.reporter = FleetReporter(cfg, versions=versions, telemetry=self.telemetry, commands=self)
        self.reporter.start()

    def measure_decision_latency_ms(self, task: SortingTask, runs: int = 20) -> float:
        """Typical time to decide and queue: a full batch of crops through preprocessing and inference (median)
        plus the slowest of a few serial round trips. An occasional slower decision is safe: the MCU answers
        LATE and the item goes to the default bin; a line that cannot meet the typical time is refused."""
        crops = [np.zeros((*task.pre.size[::-1], 3), np.uint8)] * task.max_batch
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.backend.infer(task.pre(crops))
            times.append((time.perf_counter() - t0) * 1000.0)
        rtt_ms = self._slowest_round_trip_ms() if self.link else 0.0
        return float(np.median(times)) + rtt_ms

    def _slowest_round_trip_ms(self, wanted: int = 5, tries: int = 10, least: int = 3) -> float:
        """The slowest of `wanted` heartbeat round trips. A heartbeat lost to a moment's starvation (a loaded
        host) is tried again rather than ending the start-up; a link that loses most of them is refused."""
        from firmware_bridge.link import BridgeTimeout

        rtts: list[float] = []
        for _ in range(tries):
            try:
                rtts.append(self.link.ping())
            except BridgeTimeout as exc:
                log.warning("start-up latency check: %s", exc)
            if len(rtts) == wanted:
                break
        if len(rtts) < least:
            raise BridgeTimeout(
                f"the MCU answered {len(rtts)} of {tries} heartbeats at start-up (at least {least} needed to "
                "measure the decision latency): check the serial cable and the MCU's power"
            )
        return max(rtts) * 1000.0

    # -- fault injection (twin only) --------------------------------------------------------------------
    def _inject_faults(self) -> None:
        t0 = time.monotonic()
        for at, kind, seconds in self.twin.p.fault_schedule():
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            if kind == "stall":
                self._alarm("fault_injected", f"host stall for {seconds:.2f} s")
                # A frozen host: the sorting thread and every serial write stop, as under CPU starvation.
                # BridgeLink has no public pause, so its write lock is held (fault injection only).
                assert self.sorter is not None
                with self.sorter.host_lock, self.link._write_lock:
                    time.sleep(seconds)
            elif kind == "freeze":
                self._alarm("fault_injected", f"whole-process freeze for {seconds:.2f} s")
                # What a loaded VM does to the host: every thread stops at once, the in-process Python MCU with
                # it (the firmware in simavr is another process and keeps running, as a real MCU would). The
                # belt does not stop: the encoder counts on time.monotonic(). SIGSTOP must come from outside.
                pid = os.getpid()
                helper = subprocess.Popen(["sh", "-c", f"kill -STOP {pid}; sleep {seconds}; kill -CONT {pid}"])
                helper.wait()
            elif kind == "reset" and self.mcu_sim is not None:
                self._alarm("fault_injected", "MCU reset")
                self.mcu_sim.reset()
            elif kind == "pause" and self.mcu_sim is not None:
                # the MCU's clock and the belt stop; the host finds out from the next heartbeat (a clock jump)
                self._alarm("fault_injected", f"MCU and belt paused for {seconds:.3f} s")
                self.mcu_sim.pause(seconds)

    # -- running ----------------------------------------------------------------------------------------
    def _consume(self, frame: Frame, result: Any, times: Any = None) -> None:
        self.latest_frame = frame
        assert self.sorter is not None
        self.sorter.consume(frame, result, times)

    def _report_item(self, o: ItemOutcome, frame: Frame) -> None:
        # The outbox write (fsync) takes milliseconds: it happens on the reporting thread, never between a
        # decision and the next frame.
        self.item_events += 1
        self._events.put({**o.event(), "model": self.bundle.manifest.model_id() if self.bundle else ""})

    def _report_loop(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            try:
                self.reporter.item_event(event)
            except Exception:  # a full disk must not stop the sort; the reporter counts its own drops
                log.exception("item event %s could not be stored", event.get("item"))

    def _stop_reporting(self) -> None:
        if self._report_thread is not None:
            self._events.put(None)
            self._report_thread.join(timeout=10)
            self._report_thread = None

    def _alarm(self, kind: str, message: str, **fields: Any) -> None:
        log.warning("alarm %s: %s", kind, message)
        if self.reporter is not None:
            self.reporter.alarm(kind, message, **fields)

    def telemetry(self) -> dict[str, Any]:
        """The telemetry snapshot (device.fleet.payloads.Telemetry fields): pure reads of the parts' counters."""
        snap: dict[str, Any] = {"model": self.bundle.manifest.model_id() if self.bundle else None,
                                "temperatures_c": read_temperatures()}
        if self.pipeline is not None:
            st = self.pipeline.stats()
            snap["fps"] = round(float(st.get("fps_out", 0.0)), 2)
            snap["dropped_frames"] = int(st.get("dropped", 0))
            snap["latency_ms"] = {k: {"p50_ms": round(v["p50"], 2), "p99_ms": round(v["p99"], 2)}
                                  for k, v in st.get("latency_ms", {}).items()}
        if self.sorter is not None:
            s = self.sorter.snapshot()
            snap["counts"] = s["counts"]
            snap["reject_rate"] = s["reject_rate"]
            snap["paused"] = self.sorter.paused.is_set()
            snap["latency_ms"] = {**snap.get("latency_ms", {}), "decision": {
                "p50_ms": s["decision_latency_ms"]["p50"], "p99_ms": s["decision_latency_ms"]["p99"]}}
            snap["belt_speed_mps"] = round(self.sorter.ticks_per_s() / self.cfg.line.ticks_per_mm
                                           / 1000.0, 3)
        if self.link is not None:
            snap["link"] = dict(self.link.counters)
        return snap

    # -- fleet commands (device.fleet.commands.CommandHandler) ----------------------------------------------
    def pause(self) -> None:
        if self.sorter:
            self.sorter.paused.set()

    def resume(self) -> None:
        if self.sorter:
            self.sorter.paused.clear()

    def set_config(self, doc: dict[str, Any]) -> list[str]:
        """Apply the parts of a new config that can change while running (sorting rules); refuse the rest."""
        from device.config import DeviceConfig

        try:
            new = DeviceConfig.model_validate(doc)
        except ValueError as exc:
            return [str(exc)]
        reasons = [f"{k} cannot change while running; restart the service"
                   for k in ("device", "cameras", "model", "line", "bridge", "mqtt", "paths")
                   if getattr(new, k) != getattr(self.cfg, k)]
        if reasons:
            return reasons
        if self.sorter:
            unknown = set(new.sorting.grade_to_gate) - set(self.sorter.labels)
            if unknown:
                return [f"sorting.grade_to_gate names grades the model does not know: {sorted(unknown)}"]
            self.cfg = new
            self.sorter.cfg = new
            self.sorter.tracker.confirm_frames = new.sorting.confirm_frames
            self.sorter.tracker.drop_frames = new.sorting.drop_frames
        return []

    def snapshot(self) -> bytes:
        import cv2

        if self.latest_frame is None:
            raise ConfigError("no frame has been captured yet")
        ok, jpg = cv2.imencode(".jpg", self.latest_frame.image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return bytes(jpg)

    # -- stop -------------------------------------------------------------------------------------------
    def _make_safe(self) -> None:
        if self.link is not None and self.link.connected:
            self.link.safe_state()  # raises unless the MCU acknowledged: flushed queue, gates de-energised
            self.mcu_safe = True

    def close(self) -> None:
        """Reverse order; every step runs even when an earlier one fails, and the MCU ends safe."""
        steps = [
            ("pipeline", lambda: self.pipeline and self.pipeline.stop()),
            ("MCU safe state", self._make_safe),
            ("link", lambda: self.link and self.link.close()),
            ("item events", self._stop_reporting),
            ("reporter", lambda: self.reporter and self.reporter.stop()),
            ("twin", lambda: self.twin and self.twin.stop()),
            ("mcu simulator", lambda: self.mcu_sim and self.mcu_sim.stop()),
            ("backend", lambda: self.backend and self.backend.close()),
        ]
        for name, step in steps:
            try:
                step()
            except Exception:
                log.exception("closing %s failed", name)
