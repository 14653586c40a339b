"""Capture sources behind one interface, opened by URI (DESIGN: Device config, cameras).

| URI                                   | source                                           |
|---------------------------------------|--------------------------------------------------|
| `file:///path/video.mp4`, a bare path  | a video file (OpenCV/FFmpeg)                      |
| `file:///path/dir`, a bare directory   | a folder of images, in name order                 |
| `v4l2:///dev/video0`                  | a USB/V4L2 camera                                 |
| `csi://0`                             | a Jetson CSI camera through nvarguscamerasrc      |
| `rtsp://host/...`, `http(s)://...`    | a network stream (RTSP over TCP, MJPEG over HTTP) |
| `sim://?...`                          | the digital twin's camera (device.sim)            |

File and folder sources take `?fps=N` (pace to N frames/s; 0 = as fast as they decode; default: the video's
own rate, or unpaced for a folder) and `?loop=1` (start again at the end).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

from device.errors import EdgesortError
from device.frames import Frame


class CaptureError(EdgesortError):
    """A camera or stream cannot be opened or read; the message says which and why in one sentence."""

    exit_code = 74  # EX_IOERR


class EndOfStreamError(CaptureError):
    """A finite source (file, folder) has no more frames."""


@runtime_checkable
class CaptureSource(Protocol):
    name: str

    def open(self) -> None: ...

    def read(self, timeout: float) -> Frame | None: ...

    def close(self) -> None: ...


def query_params(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _flag(params: dict[str, str], key: str) -> bool:
    return params.get(key, "0").lower() in ("1", "true", "yes", "on")


def _fps_param(params: dict[str, str], uri: str) -> float | None:
    if "fps" not in params:
        return None
    try:
        fps = float(params["fps"])
    except ValueError:
        raise CaptureError(f"{uri}: fps={params['fps']!r} is not a number") from None
    if fps < 0:
        raise CaptureError(f"{uri}: fps must be 0 (unpaced) or more")
    return fps


def open_source(
    uri: str,
    *,
    name: str = "cam0",
    width: int = 1280,
    height: int = 720,
    fps: float | None = None,
) -> CaptureSource:
    """Make (not yet open) the capture source a URI names. `fps` is the rate asked of a camera; files and
    folders use it as their pace unless the URI says `?fps=`."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "sim":
        try:
            sim = importlib.import_module("device.sim")
        except ImportError as exc:
            raise CaptureError(f"{uri}: sim:// needs device.sim, which this install lacks ({exc})") from exc
        source: CaptureSource = sim.open_camera(uri, name=name)
        return source
    if scheme in ("", "file"):
        from device.capture.files import FolderSource, VideoFileSource

        # file://rel/path puts "rel" in the netloc; file:///abs/path and file://localhost/abs/path do not.
        host = parts.netloc if parts.netloc not in ("", "localhost") else ""
        path = Path(unquote(host + parts.path))
        params = query_params(parts.query)
        pace = _fps_param(params, uri)
        if pace is None:
            pace = fps
        loop = _flag(params, "loop")
        if path.is_dir():
            return FolderSource(path, name=name, fps=pace or 0.0, loop=loop)
        if not path.exists():
            raise CaptureError(f"{uri}: no such file or folder")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return FolderSource(path, name=name, fps=pace or 0.0, loop=loop)
        return VideoFileSource(path, name=name, fps=pace, loop=loop)
    if scheme == "v4l2":
        from device.capture.cameras import V4l2Source

        return V4l2Source(parts.path or "/dev/video0", name=name, width=width, height=height, fps=fps or 30.0)
    if scheme == "csi":
        from device.capture.cameras import CsiSource

        try:
            sensor = int(parts.netloc or parts.path.strip("/") or 0)
        except ValueError:
            raise CaptureError(f"{uri}: csi:// takes a sensor number, e.g. csi://0") from None
        params = query_params(parts.query)
        return CsiSource(
            sensor, name=name, width=width, height=height, fps=fps or 30.0, flip=int(params.get("flip", 0))
        )
    if scheme in ("rtsp", "rtsps", "http", "https"):
        from device.capture.cameras import StreamSource

        return StreamSource(uri, name=name)
    raise CaptureError(
        f"{uri}: unknown camera URI scheme '{scheme}' (use file://, v4l2://, csi://, rtsp://, http:// or sim://)"
    )


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
