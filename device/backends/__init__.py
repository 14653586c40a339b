"""Inference backends behind one interface: `create_backend(bundle, "auto")` picks the fastest one present."""

from device.backends.base import (
    BACKENDS,
    Backend,
    BackendError,
    BackendOptions,
    available_backends,
    create_backend,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendOptions",
    "available_backends",
    "create_backend",
    "register_backend",
]
