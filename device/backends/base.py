"""The backend interface and its registry: one module per backend, each registering itself with a decorator.

A backend turns an NCHW float32 batch into the model's outputs by name. Backends import their heavy library
(onnxruntime, tensorrt + pycuda, torch) inside the constructor, so this package imports on any machine; a
missing library is one clear sentence (MissingDependencyError), never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from device.bundle import Bundle
from device.errors import EdgesortError

log = logging.getLogger(__name__)


class BackendError(EdgesortError):
    """A backend could not load or run a model."""

    exit_code = 70  # EX_SOFTWARE


@runtime_checkable
class Backend(Protocol):
    name: str

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendOptions:
    threads: int = 0  # CPU threads (0 = the library's default)
    precision: str = "fp32"
    dla_core: int | None = None
    engine_cache: Path | None = None
    warmup: int = 2  # inferences run in the constructor so the first real frame is not the slow one


BackendFactory = Callable[[Bundle, BackendOptions], Backend]
F = TypeVar("F", bound=BackendFactory)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    factory: BackendFactory
    rank: int  # lower = faster; `auto` takes the lowest rank that is present
    probe: Callable[[], str | None]  # None when usable here, else the reason in one sentence


BACKENDS: dict[str, BackendInfo] = {}

# The modules holding the built-in backends; importing one fills BACKENDS through @register_backend.
_BUILTIN_MODULES = (
    "device.backends.tensorrt",
    "device.backends.onnxruntime",
    "device.backends.torch_backend",
)


def register_backend(name: str, *, rank: int, probe: Callable[[], str | None]) -> Callable[[F], F]:
    """Class decorator: add a backend to BACKENDS. A second backend with the same name is a bug and raises."""

    def deco(factory: F) -> F:
        if name in BACKENDS and BACKENDS[name].factory is not factory:
            raise ValueError(f"a backend named '{name}' is already registered")
        BACKENDS[name] = BackendInfo(name, factory, rank, probe)
        return factory

    return deco


def module_missing(*modules: str) -> str | None:
    """Probe helper: a sentence naming the first module that cannot be found, without importing it."""
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"the Python module '{m}' is not installed"
    return None


def load_builtin_backends() -> dict[str, BackendInfo]:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)
    return BACKENDS


def available_backends() -> dict[str, str | None]:
    """Every registered backend and why it cannot run here (None = it can), fastest first."""
    load_builtin_backends()
    return {b.name: b.probe() for b in sorted(BACKENDS.values(), key=lambda b: b.rank)}


def create_backend(
    bundle: Bundle,
    name: str = "auto",
    *,
    threads: int = 0,
    precision: str = "fp32",
    dla_core: int | None = None,
    engine_cache: Path | None = None,
    warmup: int = 2,
) -> Backend:
    """Open `bundle` on the named backend; `auto` picks the fastest one present on this machine."""
    load_builtin_backends()
    opts = BackendOptions(threads, precision, dla_core, engine_cache, warmup)
    if name == "auto":
        reasons = []
        for info in sorted(BACKENDS.values(), key=lambda b: b.rank):
            why = info.probe()
            if why is None:
                log.info("backend auto: using %s", info.name)
                return info.factory(bundle, opts)
            reasons.append(f"{info.name}: {why}")
        raise BackendError("no inference backend is usable on this machine (" + "; ".join(reasons) + ")")
    info_or_none = BACKENDS.get(name)
    if info_or_none is None:
        raise BackendError(f"unknown backend '{name}' (known: {', '.join(sorted(BACKENDS))})")
    return info_or_none.factory(bundle, opts)


def input_batch_limit(shape: tuple[int | str | None, ...]) -> int | None:
    """The fixed batch size of a model input, or None when the batch dimension is dynamic."""
    first = shape[0]
    return first if isinstance(first, int) and first > 0 else None


def run_in_chunks(
    run: Callable[[np.ndarray], dict[str, np.ndarray]], batch: np.ndarray, limit: int | None
) -> dict[str, np.ndarray]:
    """Run a batch on a model whose batch dimension is fixed (e.g. FastestDet: 1) by splitting it."""
    if limit is None or batch.shape[0] <= limit:
        return run(batch)
    parts = [run(batch[i : i + limit]) for i in range(0, batch.shape[0], limit)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def warm_up(backend: Backend, shape: tuple[int, int, int], times: int) -> None:
    """Run a few zero batches: the first inference pays for allocation, kernel selection and caches."""
    dummy = np.zeros((1, *shape), np.float32)
    for _ in range(times):
        backend.infer(dummy)
