"""Typed errors that the command line turns into one clear sentence and a non-zero exit code."""

from __future__ import annotations

from typing import Any


class EdgesortError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""

    exit_code = 1


class ConfigError(EdgesortError):
    """The device config is missing, unreadable, or invalid."""

    exit_code = 78  # EX_CONFIG (sysexits.h); systemd shows it as "CONFIG"


class BundleError(EdgesortError):
    """A model bundle is missing, malformed, altered, or unsigned where a signature is required."""

    exit_code = 65  # EX_DATAERR


class MissingDependencyError(EdgesortError):
    """An optional library (tensorrt, pycuda, onnxruntime, torch, cv2) needed for the asked feature is absent."""

    exit_code = 69  # EX_UNAVAILABLE

    def __init__(self, module: str, feature: str, hint: str = "") -> None:
        msg = f"{feature} needs the Python module '{module}', which is not installed"
        super().__init__(msg + (f"; {hint}" if hint else ""))
        self.module = module


def require(module: str, feature: str, hint: str = "") -> Any:
    """Import an optional heavy module inside the code that needs it, or raise one clear sentence."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, feature, hint) from exc
