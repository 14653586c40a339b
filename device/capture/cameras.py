"""Live sources: V4L2 (USB) cameras, Jetson CSI cameras through GStreamer, and network streams (RTSP, HTTP).

All three read through OpenCV's VideoCapture. A read that returns no frame raises CaptureError, so the capture
thread reopens the source with back-off (a camera unplugged, a stream whose server went away).
"""

from __future__ import annotations

import logging
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from device.capture.base import CaptureError
from device.frames import Frame

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 5000  # a network camera that has not answered in 5 s is treated as gone (then retried)
READ_TIMEOUT_MS = 3000  # FFmpeg's default is 30 s, far past the stall timeout: a dead stream would hang
# FFmpeg reads these options from the environment when a capture opens (pip OpenCV has no other way to pass
# them): RTSP over TCP (UDP loses packets on busy Wi-Fi and shows grey smears), no input buffering, low delay.
FFMPEG_LOW_LATENCY = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|max_delay;500000"


def _cv2() -> Any:
    from device.errors import require

    return require("cv2", "camera capture", "pip install opencv-python-headless (or JetPack's OpenCV)")


def _frame(name: str, seq: int, img: Any) -> Frame:
    cv2 = _cv2()
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return Frame(img, time.monotonic(), seq, name)


class _OpenCvSource:
    """Shared read/close for sources backed by one cv2.VideoCapture."""

    name: str
    describe: str

    def __init__(self) -> None:
        self._cap: Any = None
        self._seq = 0

    def read(self, timeout: float) -> Frame | None:
        if self._cap is None:
            raise CaptureError(f"{self.name}: read before open")
        ok, img = self._cap.read()
        if not ok or img is None:
            raise CaptureError(f"{self.describe}: no frame (disconnected or stopped)")
        self._seq += 1
        return _frame(self.name, self._seq, img)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class V4l2Source(_OpenCvSource):
    """A V4L2 camera (USB webcam, HDMI grabber). MJPEG is asked for: most USB cameras reach their full frame
    rate only in MJPEG, raw YUYV being limited by USB 2 bandwidth."""

    def __init__(
        self, device: str, *, name: str = "cam0", width: int = 1280, height: int = 720, fps: float = 30.0
    ) -> None:
        super().__init__()
        self.device, self.name, self.width, self.height, self.fps = device, name, width, height, fps
        self.describe = f"v4l2://{device}"

    def open(self) -> None:
        cv2 = _cv2()
        if not Path(self.device).exists():
            raise CaptureError(f"{self.describe}: no such device (camera unplugged, or another /dev/videoN?)")
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"{self.describe}: cannot open the camera (busy, or not in group video?)")
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue would hand out stale frames first
        self._cap = cap
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if got != (self.width, self.height):
            log.warning("%s: asked %dx%d, got %dx%d", self.describe, self.width, self.height, *got)


def argus_pipeline(sensor: int, width: int, height: int, fps: float, flip: int = 0) -> str:
    """The GStreamer pipeline for a Jetson CSI camera: nvarguscamerasrc (ISP, NVMM memory) -> nvvidconv to
    BGRx in CPU memory -> videoconvert to BGR -> an appsink that keeps only the newest frame."""
    ntsc = round(fps * 1.001)
    if abs(fps - round(fps)) > 1e-3 and abs(fps - ntsc * 1000 / 1001) < 1e-2:
        rate = Fraction(ntsc * 1000, 1001)  # 29.97 is 30000/1001 (NTSC), which sensor modes use
    else:
        rate = Fraction(fps).limit_denominator(100)
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){rate.numerator}/{rate.denominator}, format=(string)NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, width=(int){width}, height=(int){height}, "
        "format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


class CsiSource(_OpenCvSource):
    """A MIPI CSI camera on a Jetson (IMX219, IMX477, ...) through nvarguscamerasrc."""

    def __init__(
        self,
        sensor: int,
        *,
        name: str = "cam0",
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        flip: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= flip <= 7:
            raise CaptureError(f"csi://{sensor}: flip must be 0..7 (nvvidconv flip-method), got {flip}")
        self.name = name
        self.describe = f"csi://{sensor}"
        self.pipeline = argus_pipeline(sensor, width, height, fps, flip)

    def open(self) -> None:
        cv2 = _cv2()
        if "GStreamer:                   YES" not in cv2.getBuildInformation():
            raise CaptureError(
                f"{self.describe}: this OpenCV has no GStreamer support (pip's opencv-python has none); "
                "use JetPack's OpenCV for CSI cameras"
            )
        cap = cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(
                f"{self.describe}: the camera pipeline did not start (sensor connected? nvargus-daemon "
                "running? `sudo systemctl restart nvargus-daemon` after a crash)"
            )
        self._cap = cap


class StreamSource(_OpenCvSource):
    """A network stream through FFmpeg: RTSP (over TCP, low latency) or HTTP (MJPEG, HLS, ...)."""

    def __init__(self, uri: str, *, name: str = "cam0") -> None:
        super().__init__()
        self.uri = uri
        self.name = name
        # Never log credentials that may be in the URI (rtsp://user:pass@host/...).
        self.describe = uri.split("@", 1)[-1] if "@" in uri else uri

    def open(self) -> None:
        cv2 = _cv2()
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = FFMPEG_LOW_LATENCY
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"{self.describe}: cannot open the stream (unreachable, refused, wrong path)")
        self._cap = cap
