"""Capture sources opened by URI, and the capture thread that keeps the latest frame."""

from device.capture.base import CaptureError, CaptureSource, EndOfStreamError, open_source
from device.capture.thread import CaptureThread

__all__ = ["CaptureError", "CaptureSource", "CaptureThread", "EndOfStreamError", "open_source"]
