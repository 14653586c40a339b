"""Finite sources: a video file and a folder of images (replaying recordings, benchmarks, tests)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from device.capture.base import IMAGE_SUFFIXES, CaptureError, EndOfStreamError
from device.frames import Frame

log = logging.getLogger(__name__)


class _Pacer:
    """Releases frame i at t0 + i / fps, like a camera would; fps 0 = as fast as frames decode."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next_due = 0.0

    def reset(self) -> None:
        self.next_due = time.monotonic()

    def wait(self, timeout: float) -> bool:
        """Sleep until the next frame is due; False when that is later than `timeout` from now."""
        if not self.period:
            return True
        delay = self.next_due - time.monotonic()
        if delay > timeout:
            time.sleep(max(timeout, 0.0))  # the caller's timeout elapses here, as a camera read would
            return False
        if delay > 0:
            time.sleep(delay)  # pacing: a recording replays at its own frame rate
        # A late reader does not get a burst of catch-up frames, as a real camera would not give one.
        self.next_due = max(self.next_due + self.period, time.monotonic() - self.period)
        return True


class FolderSource:
    """Images in name order (or one image file). Unreadable images are skipped with a log line."""

    def __init__(self, path: Path, *, name: str = "cam0", fps: float = 0.0, loop: bool = False) -> None:
        self.name = name
        self.path = path
        self.loop = loop
        self._pacer = _Pacer(fps)
        self._files: list[Path] = []
        self._i = 0
        self._seq = 0
        self._good_this_pass = 0
        self.skipped = 0

    def open(self) -> None:
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif self.path.is_file():
            self._files = [self.path]
        else:
            raise CaptureError(f"{self.path}: the image folder is gone")
        if not self._files:
            raise CaptureError(f"{self.path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
        self._i = 0
        self._good_this_pass = 0
        self._pacer.reset()

    def read(self, timeout: float) -> Frame | None:
        if not self._files:
            raise CaptureError(f"{self.name}: read before open")
        if not self._pacer.wait(timeout):
            return None
        while True:
            if self._i >= len(self._files):
                if self._good_this_pass == 0:
                    raise CaptureError(f"{self.path}: none of the {len(self._files)} images could be decoded")
                if not self.loop:
                    raise EndOfStreamError(f"{self.path}: end of the folder ({self._seq} frames)")
                self._i = 0
                self._good_this_pass = 0
            f = self._files[self._i]
            self._i += 1
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                self.skipped += 1
                log.warning("%s: %s is not a readable image; skipped", self.name, f)
                continue
            self._good_this_pass += 1
            self._seq += 1
            return Frame(img, time.monotonic(), self._seq, self.name, meta={"file": f.name})

    def close(self) -> None:
        self._files = []


class VideoFileSource:
    """A video file decoded by OpenCV (FFmpeg). A file that decodes to nothing is an error, not an empty
    run."""

    def __init__(
        self, path: Path, *, name: str = "cam0", fps: float | None = None, loop: bool = False
    ) -> None:
        self.name = name
        self.path = path
        self.loop = loop
        self._fps = fps
        self._pacer = _Pacer(0.0)
        self._cap: cv2.VideoCapture | None = None
        self._seq = 0
        self._read_this_pass = 0
        self.frame_count = 0

    def open(self) -> None:
        if not self.path.is_file():
            raise CaptureError(f"{self.path}: no such video file")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(
                f"{self.path}: not a video OpenCV/FFmpeg can open (corrupt or unsupported format)"
            )
        self._cap = cap
        native = cap.get(cv2.CAP_PROP_FPS)
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        pace = self._fps if self._fps is not None else (native if 0 < native < 1000 else 0.0)
        self._pacer = _Pacer(pace)
        self._pacer.reset()
        self._read_this_pass = 0

    def read(self, timeout: float) -> Frame | None:
        cap = self._cap
        if cap is None:
            raise CaptureError(f"{self.name}: read before open")
        if not self._pacer.wait(timeout):
            return None
        ok, img = cap.read()
        if not ok or img is None:
            if self._read_this_pass == 0:
                raise CaptureError(f"{self.path}: no frame could be decoded (corrupt or unsupported video)")
            if 0 < self._read_this_pass < self.frame_count - 1:
                log.warning(
                    "%s: %s ended after %d of %d frames (truncated or corrupt)",
                    self.name,
                    self.path,
                    self._read_this_pass,
                    self.frame_count,
                )
            if not self.loop:
                raise EndOfStreamError(f"{self.path}: end of the video ({self._seq} frames)")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._read_this_pass = 0
            ok, img = cap.read()
            if not ok or img is None:
                raise CaptureError(f"{self.path}: cannot seek back to the start to loop")
        self._read_this_pass += 1
        self._seq += 1
        return Frame(_bgr(img), time.monotonic(), self._seq, self.name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


class ReplaySource:
    """Frames held in memory, replayed in a loop at `fps` (benchmarks: the same frames for the bare backend
    and the pipeline, with no decode cost). Each replay gets a fresh capture time and sequence number."""

    def __init__(
        self, images: list[np.ndarray], *, name: str = "replay", fps: float = 0.0, loop: bool = True
    ) -> None:
        if not images:
            raise CaptureError("a replay source needs at least one frame")
        self.name = name
        self.images = images
        self.loop = loop
        self._pacer = _Pacer(fps)
        self._i = 0
        self._seq = 0

    def open(self) -> None:
        self._i = 0
        self._pacer.reset()

    def read(self, timeout: float) -> Frame | None:
        if self._i >= len(self.images):
            if not self.loop:
                raise EndOfStreamError(f"{self.name}: end of the {len(self.images)} frames")
            self._i = 0
        if not self._pacer.wait(timeout):
            return None
        img = self.images[self._i]
        self._i += 1
        self._seq += 1
        return Frame(img, time.monotonic(), self._seq, self.name)

    def close(self) -> None:
        pass
