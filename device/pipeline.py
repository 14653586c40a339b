"""The frame pipeline: each stage in its own thread, bounded queues between them, timestamps at every stage.

```
 camera ──▶ capture thread ──slot(1)──▶ prepare ──q──▶ infer ──q──▶ finish ──q──▶ consumer
            reads at the camera's        task.prepare   backend     task.finish   the sorter / a sink
            pace; latest frame wins,     (crop, resize, .infer      (decode,      (track, decide,
            an unread frame replaced     normalise)                  NMS, ...)     schedule, report)
            by a newer one is dropped
            and counted
```

Why this shape: the backend is the bottleneck and must never wait, so a frame's preparation runs while the
previous batch is inferred, and decoding runs while the next one is. Queues are bounded (`queue_size`), so a
slow stage backs the pipeline up to the capture slot, where the newest frame replaces the unread one: capture
never blocks on inference, and lag shows as a dropped count rather than as growing latency or memory.
End-of-stream travels through the queues as a marker, so `join()` returns once the last frame is consumed.

A stage that raises on one frame drops that frame, counts the error and keeps running (the daemon must not
stop for one bad frame); the first error of each stage and every 100th are logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from device.backends.base import Backend
from device.bundle import Bundle
from device.capture.base import CaptureSource
from device.capture.thread import CaptureThread
from device.frames import Frame

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting stage checks for stop(); bounds shutdown time, costs nothing when busy
STATS_WINDOW = 2048  # per-stage latency samples kept for p50/p99 (about a minute at 30 fps)
ERROR_LOG_EVERY = 100

STAGES = ("wait", "prepare", "queue", "infer", "finish", "consumer", "total")


class FrameTask(Protocol):
    """What the pipeline does with a frame around the backend. `prepare` returns the NCHW batch to infer
    (None: nothing to infer, `finish` gets outputs=None) and a context passed on to `finish`. The batch must
    stay valid until the infer stage takes it: up to `queue_size + 2` batches are alive at once."""

    def prepare(self, frame: Frame) -> tuple[np.ndarray | None, Any]: ...

    def finish(self, frame: Frame, outputs: dict[str, np.ndarray] | None, ctx: Any) -> Any: ...


@dataclass(slots=True)
class StageTimes:
    """`time.monotonic()` at each stage boundary of one frame."""

    capture: float
    taken: float = 0.0
    prepared: float = 0.0
    infer_start: float = 0.0
    infer_end: float = 0.0
    finish_start: float = 0.0
    finished: float = 0.0

    def durations_ms(self) -> dict[str, float]:
        return {
            "wait": (self.taken - self.capture) * 1e3,
            "prepare": (self.prepared - self.taken) * 1e3,
            "queue": (self.infer_start - self.prepared) * 1e3,
            "infer": (self.infer_end - self.infer_start) * 1e3,
            "finish": (self.finished - self.finish_start) * 1e3,
        }


Consumer = Callable[[Frame, Any, StageTimes], None]


@dataclass(slots=True)
class _Item:
    frame: Frame
    times: StageTimes
    batch: np.ndarray | None = None
    ctx: Any = None
    outputs: dict[str, np.ndarray] | None = None
    result: Any = None


_END = object()  # end-of-stream marker passed down the queues


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lat: dict[str, deque[float]] = {s: deque(maxlen=STATS_WINDOW) for s in STAGES}
        self.errors: dict[str, int] = {s: 0 for s in ("prepare", "infer", "finish", "consumer")}
        self.done: deque[float] = deque(maxlen=256)
        self.frames_out = 0
        self.inferred = 0

    def error(self, stage: str, exc: BaseException) -> None:
        with self.lock:
            self.errors[stage] += 1
            n = self.errors[stage]
        if n == 1 or n % ERROR_LOG_EVERY == 0:
            log.error("pipeline %s failed on a frame (%d so far): %s: %s", stage, n, type(exc).__name__, exc)


class Pipeline:
    def __init__(
        self,
        source: CaptureSource,
        backend: Backend,
        task: FrameTask,
        consumer: Consumer,
        *,
        queue_size: int = 2,
        stall_timeout_s: float = 2.0,
        reopen: bool = True,
        opencv_threads: int = 1,
    ) -> None:
        self.backend = backend
        self.opencv_threads = opencv_threads
        self.task = task
        self.consumer = consumer
        self.capture = CaptureThread(source, stall_timeout_s=stall_timeout_s, reopen=reopen)
        self._queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=queue_size) for _ in range(3)]
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stats = _Stats()
        self._started = 0.0

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.opencv_threads > 0:
            import cv2

            # The stages are the parallelism. OpenCV's own worker pool, used by the prepare stage's resize and
            # colour conversion, would take the core the backend runs on: with it, the whole-frame demo ran at
            # 0.80 of the bare backend, without it 0.87 (docs/benchmarks/device.md). 0 leaves OpenCV's default.
            cv2.setNumThreads(self.opencv_threads)
        self.capture.start()
        self._started = time.monotonic()
        q_inf, q_fin, q_con = self._queues
        for name, target in (
            ("prepare", lambda: self._prepare_loop(q_inf)),
            ("infer", lambda: self._infer_loop(q_inf, q_fin)),
            ("finish", lambda: self._finish_loop(q_fin, q_con)),
            ("consumer", lambda: self._consumer_loop(q_con)),
        ):
            t = threading.Thread(target=target, name=f"pipeline-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until a finite source's last frame has been consumed; True when it has."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.capture.stop()
        for t in self._threads:
            t.join(timeout=5.0)  # a stage stuck in the backend or the consumer: do not hang shutdown on it
            if t.is_alive():
                log.warning("pipeline: thread %s did not stop within 5 s", t.name)
        self._threads.clear()

    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._done.is_set() and not self._stop.is_set()

    # stats -----------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """fps in and out, drops, errors, and per-stage latency p50/p99 in ms over the last frames."""
        st = self._stats
        with st.lock:
            lat = {k: np.fromiter(v, float) for k, v in st.lat.items()}
            done = list(st.done)
            errors = dict(st.errors)
            frames_out = st.frames_out
        cap = self.capture.stats()
        elapsed = time.monotonic() - self._started if self._started else 0.0
        return {
            "fps_in": cap["fps"],
            "fps_out": (len(done) - 1) / (done[-1] - done[0])
            if len(done) > 1 and done[-1] > done[0]
            else 0.0,
            "frames_in": cap["frames"],
            "frames_out": frames_out,
            "dropped": cap["dropped"],
            "errors": errors,
            "capture": cap,
            "elapsed_s": elapsed,
            "latency_ms": {
                k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "n": int(v.size)}
                for k, v in lat.items()
                if v.size
            },
        }

    def latencies_ms(self, stage: str) -> np.ndarray:
        """The recent latency samples of one stage (for histograms)."""
        with self._stats.lock:
            return np.fromiter(self._stats.lat[stage], float)

    # stages ----------------------------------------------------------------------------------------------
    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self._stop.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return None

    def _prepare_loop(self, out: queue.Queue[Any]) -> None:
        while not self._stop.is_set():
            frame = self.capture.get(POLL_S)
            if frame is None:
                if self.capture.finished:
                    self._put(out, _END)
                    return
                continue
            times = StageTimes(capture=frame.capture_ts, taken=time.monotonic())
            try:
                batch, ctx = self.task.prepare(frame)
            except Exception as exc:
                self._stats.error("prepare", exc)
                continue
            times.prepared = time.monotonic()
            if not self._put(out, _Item(frame, times, batch, ctx)):
                return

    def _infer_loop(self, inp: queue.Queue[Any], out: queue.Queue[Any]) -> None:
        while (item := self._get(inp)) is not None:
            if item is _END:
                self._put(out, _END)
                return
            t = item.times
            t.infer_start = time.monotonic()
            if item.batch is not None:
                try:
                    item.outputs = self.backend.infer(item.batch)
                except Exception as exc:
                    self._stats.error("infer", exc)
                    continue
                item.batch = None  # the preprocessor may now reuse that buffer
                self._stats.inferred += 1
            t.infer_end = time.monotonic()
            if not self._put(out, item):
                return

    def _finish_loop(self, inp: queue.Queue[Any], out: queue.Queue[Any]) -> None:
        while (item := self._get(inp)) is not None:
            if item is _END:
                self._put(out, _END)
                return
            item.times.finish_start = time.monotonic()
            try:
                item.result = self.task.finish(item.frame, item.outputs, item.ctx)
            except Exception as exc:
                self._stats.error("finish", exc)
                continue
            item.times.finished = time.monotonic()
            item.outputs = None
            if not self._put(out, item):
                return

    def _consumer_loop(self, inp: queue.Queue[Any]) -> None:
        st = self._stats
        while (item := self._get(inp)) is not None:
            if item is _END:
                self._done.set()
                return
            t0 = time.monotonic()
            try:
                self.consumer(item.frame, item.result, item.times)
            except Exception as exc:
                st.error("consumer", exc)
            t1 = time.monotonic()
            d = item.times.durations_ms()
            d["consumer"] = (t1 - t0) * 1e3
            d["total"] = (t1 - item.times.capture) * 1e3
            with st.lock:
                for k, v in d.items():
                    st.lat[k].append(v)
                st.done.append(t1)
                st.frames_out += 1


class WholeFrameTask:
    """Run a bundle on whole frames: classify, detect or segment, as its manifest says.

    `finish` returns a `device.postprocess` result (Classification, list[Detection] or Segmentation).
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        queue_size: int = 2,
        top_k: int = 5,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> None:
        from device.postprocess import Postprocessor
        from device.preprocess import Preprocessor

        self.manifest = bundle.manifest
        self.pre = Preprocessor(self.manifest.input, 1, ring=queue_size + 2)
        self.post = Postprocessor(
            self.manifest, top_k=top_k, score_threshold=score_threshold, iou_threshold=iou_threshold
        )

    def prepare(self, frame: Frame) -> tuple[np.ndarray | None, Any]:
        batch, transforms = self.pre.prepare([frame.image])
        return batch, transforms[0]

    def finish(self, frame: Frame, outputs: dict[str, np.ndarray] | None, ctx: Any) -> Any:
        if outputs is None:
            return None
        return self.post(outputs, [ctx])[0]
