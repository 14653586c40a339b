"""Errors of the export step. The command line prints the message as one sentence and exits non-zero."""

from __future__ import annotations

from device.errors import EdgesortError


class ExportError(EdgesortError):
    """The checkpoint could not be turned into a bundle (export, check or simplification failed)."""

    exit_code = 1


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance: no bundle is written."""

    exit_code = 3


class AccuracyGateError(ExportError):
    """The reduced-precision model lost more top-1 than allowed against FP32: no bundle is written."""

    exit_code = 4
