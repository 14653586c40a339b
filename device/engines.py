"""TensorRT engines built on the device from a bundle's ONNX model, cached under a key (DESIGN: Model bundle).

Engines are never shipped: they depend on the TensorRT version and the GPU / SoC. The cache key holds
everything that breaks an engine (model sha256, TensorRT version, compute capability and device name,
precision, DLA core, batch range, calibration cache sha256); `get_or_build_engine` reuses a cached engine
only when its key matches and otherwise rebuilds it with one log line naming what changed.

Written against the TensorRT Python API of 8.6 and 10.x (name-based I/O, ONNX parser, optimization profiles,
timing cache) and type-checked with tensorrt-stubs. `import tensorrt` resolves to the stubs' namespace package
where TensorRT is absent, so presence is checked by looking for `tensorrt.Builder`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from device.bundle import Bundle, sha256_file
from device.contract import CALIB_CACHE_NAME, INPUT_NAME, MODEL_NAME
from device.errors import EdgesortError, MissingDependencyError

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("/var/lib/edgesort/engines")
DEFAULT_MAX_BATCH = 8
WORKSPACE_BYTES = 1 << 30  # 1 GiB: enough tactics for small CNNs, fits beside the daemon on an 8 GB Orin
TIMING_CACHE_NAME = "timing.cache"
PRECISIONS = ("fp32", "fp16", "int8")


class EngineError(EdgesortError):
    """A TensorRT engine cannot be built for this bundle, precision or device."""

    exit_code = 69  # EX_UNAVAILABLE


def _require_tensorrt() -> None:
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "building a TensorRT engine", _TRT_HINT) from exc
    if not hasattr(tensorrt, "Builder"):  # only the type stubs are installed
        raise MissingDependencyError("tensorrt", "building a TensorRT engine", _TRT_HINT)


_TRT_HINT = "it comes with JetPack (or NVIDIA's tensorrt wheel); elsewhere run the bundle with onnxruntime"


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # "Orin (nvgpu)", "NVIDIA GeForce RTX 3060"
    compute_capability: str  # "8.7"
    soc: str = ""  # Jetson: /proc/device-tree/model

    def tag(self) -> str:
        return f"sm{self.compute_capability.replace('.', '')}"


def cuda_device(index: int = 0) -> DeviceInfo:
    """Name and compute capability of a CUDA GPU through the driver API.

    Hand-written with ctypes because pycuda is optional and device/ never imports torch; the driver library
    (libcuda) is present wherever TensorRT can run.
    """
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise EngineError("no CUDA driver (libcuda) on this machine: a TensorRT engine needs an NVIDIA GPU")
    dev = ctypes.c_int()
    major, minor = ctypes.c_int(), ctypes.c_int()
    buf = ctypes.create_string_buffer(256)
    attr_major, attr_minor = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR (cuda.h)
    for call, args in (
        (cuda.cuInit, (0,)),
        (cuda.cuDeviceGet, (ctypes.byref(dev), index)),
        (cuda.cuDeviceGetAttribute, (ctypes.byref(major), attr_major, dev)),
        (cuda.cuDeviceGetAttribute, (ctypes.byref(minor), attr_minor, dev)),
        (cuda.cuDeviceGetName, (buf, len(buf), dev)),
    ):
        rc = call(*args)
        if rc != 0:
            raise EngineError(f"the CUDA driver refused {call.__name__} (error {rc}): is the GPU visible?")
    soc = ""
    model = Path("/proc/device-tree/model")
    if model.is_file():
        soc = model.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    return DeviceInfo(buf.value.decode(errors="replace"), f"{major.value}.{minor.value}", soc)


@dataclass(frozen=True)
class EngineKey:
    model_sha256: str
    tensorrt: str
    device: str  # "<name> sm87 <soc>"
    precision: str
    dla_core: int | None
    max_batch: int
    calib_sha256: str = ""  # only for INT8 built from a float model with calib.cache

    def filename(self, bundle_name: str) -> str:
        where = f"dla{self.dla_core}" if self.dla_core is not None else "gpu"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in bundle_name)
        return f"{safe}-{self.model_sha256[:12]}-{self.precision}-{where}-b{self.max_batch}.engine"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: dict[str, Any]) -> list[str]:
        mine = self.as_dict()
        return [f"{k} {other.get(k)!r} -> {v!r}" for k, v in mine.items() if other.get(k) != v]


def is_explicitly_quantized(onnx_path: Path) -> bool:
    """True when the graph holds Q/DQ nodes (an INT8 bundle): TensorRT then takes its scales from them."""
    data = onnx_path.read_bytes()
    return b"QuantizeLinear" in data  # op_type strings are stored verbatim in the protobuf


def tensorrt_readable_int8(bundle: Bundle) -> bool:
    """An INT8 (Q/DQ) bundle TensorRT can build: symmetric int8 activations (the exporter's "tensorrt" scheme)."""
    q = bundle.manifest.card.get("quantization") or {}
    return q.get("activation_type") == "QInt8" and bool(q.get("activation_symmetric"))


def check_buildable(bundle: Bundle, *, precision: str, dla_core: int | None) -> None:
    """What can be refused without TensorRT: a precision this bundle cannot give. Raises EngineError."""
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision '{precision}' (fp32, fp16 or int8)")
    explicit_q = is_explicitly_quantized(bundle.model_path)
    if explicit_q and precision != "int8":
        raise EngineError(f"this bundle's model is INT8 (Q/DQ nodes); {precision} needs a float bundle")
    if explicit_q and not tensorrt_readable_int8(bundle):
        raise EngineError(
            "this INT8 bundle is quantized for ONNX Runtime (uint8 activations), which TensorRT cannot read; "
            "export it with --int8-scheme tensorrt, or build INT8 from a float bundle that has calib.cache"
        )
    if precision == "int8" and not explicit_q and not bundle.path(CALIB_CACHE_NAME).is_file():
        raise EngineError(
            f"{bundle.root}: INT8 needs calib.cache (export the float bundle with --calib SPEC) or an int8 bundle"
        )
    if dla_core is not None and precision == "fp32":
        raise EngineError("DLA runs fp16 or int8 only")


def engine_key(
    bundle: Bundle,
    *,
    precision: str,
    dla_core: int | None,
    trt_version: str,
    device: DeviceInfo,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> EngineKey:
    entry = bundle.manifest.files.get(MODEL_NAME)
    model_sha = entry.sha256 if entry else sha256_file(bundle.model_path)
    calib = ""
    if precision == "int8" and not is_explicitly_quantized(bundle.model_path):
        cache = bundle.manifest.files.get(CALIB_CACHE_NAME)
        calib = cache.sha256 if cache else ""
    dev = " ".join(x for x in (device.name, device.tag(), device.soc) if x)
    return EngineKey(model_sha, trt_version, dev, precision, dla_core, max_batch, calib)


def _shapes(bundle: Bundle, max_batch: int, dla_core: int | None) -> tuple[tuple[int, ...], ...]:
    _, c, h, w = bundle.manifest.input.shape
    # DLA runs static shapes only: one batch size, the largest, for min, opt and max.
    lo = max_batch if dla_core is not None else 1
    return (lo, c, h, w), (max_batch, c, h, w), (max_batch, c, h, w)


def trtexec_command(
    bundle: Bundle,
    *,
    precision: str,
    dla_core: int | None,
    engine_path: Path | None,
    max_batch: int = DEFAULT_MAX_BATCH,
    timing_cache: Path | None = None,
) -> str:
    """The trtexec line that builds the same engine (for bring-up and for NVIDIA's own tools)."""
    lo, opt, hi = (("x".join(str(d) for d in s)) for s in _shapes(bundle, max_batch, dla_core))
    args = [
        "trtexec",
        f"--onnx={bundle.model_path}",
        f"--saveEngine={engine_path or 'model.engine'}",
        f"--minShapes={INPUT_NAME}:{lo}",
        f"--optShapes={INPUT_NAME}:{opt}",
        f"--maxShapes={INPUT_NAME}:{hi}",
        f"--memPoolSize=workspace:{WORKSPACE_BYTES >> 20}M",
    ]
    if precision in ("fp16", "int8"):
        args.append("--fp16")
    if precision == "int8":
        args.append("--int8")
        if not is_explicitly_quantized(bundle.model_path):
            args.append(f"--calib={bundle.path(CALIB_CACHE_NAME)}")
    if dla_core is not None:
        args += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return shlex.join(args)


@dataclass(frozen=True)
class EngineReport:
    path: Path
    key: EngineKey
    rebuilt: bool
    reason: str  # "built (no cached engine)", "cached", "rebuilt: tensorrt '8.6.1' -> '10.3.0'"
    size: int


def _calibrator(cache: bytes) -> Any:
    """A calibrator that only serves the bundle's calib.cache (the scales were computed by the exporter)."""
    import tensorrt as trt

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self._cache = cache

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int]:
            # No images on the device: TensorRT then takes every scale from read_calibration_cache(). The
            # Python API documents None as "no more batches"; the stubs type it as a list, hence the ignore.
            return None  # type: ignore[return-value]

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return CacheCalibrator()


def trt_version_tag(version: str) -> str:
    """NV_TENSORRT_VERSION as TensorRT writes it in cache headers: 8.6.1 -> "8601", 10.3.0 -> "100300"."""
    try:
        major, minor, patch = (int(x) for x in [*version.split("."), "0", "0"][:3])
    except ValueError:
        raise EngineError(f"cannot read the TensorRT version '{version}'") from None
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


def restamp_cache(cache: bytes, trt_version: str) -> bytes:
    """Put the running TensorRT version into the cache header (TRT-8601-...), which TensorRT checks.

    The scales were computed by our exporter, not by a TensorRT release, so the version in the header names
    the file format only; keeping the exporter's default would make another TensorRT release ignore the cache.
    """
    head, sep, rest = cache.partition(b"\n")
    parts = head.decode(errors="replace").strip().split("-")
    if len(parts) != 3 or parts[0] != "TRT":
        raise EngineError("calib.cache is not a TensorRT calibration cache (bad first line)")
    return f"TRT-{trt_version_tag(trt_version)}-{parts[2]}".encode() + sep + rest


def build_engine(
    bundle: Bundle,
    engine_path: Path,
    *,
    precision: str,
    dla_core: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    timing_cache: Path | None = None,
    progress: Callable[[str], Any] | None = None,
) -> int:
    """Build a serialized engine from the bundle's ONNX model; return its size in bytes.

    Raises EngineError for an unsupported precision or DLA core instead of quietly building something else.
    """
    _require_tensorrt()
    import tensorrt as trt

    say = progress or log.info
    check_buildable(bundle, precision=precision, dla_core=dla_core)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit_batch = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # gone in TensorRT 10
    network = builder.create_network(0 if explicit_batch is None else 1 << int(explicit_batch))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(bundle.model_path.read_bytes(), str(bundle.model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {bundle.model_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    explicit_q = is_explicitly_quantized(bundle.model_path)
    if precision in ("fp16", "int8"):
        if not builder.platform_has_fast_fp16:
            raise EngineError(f"this GPU has no fast FP16, so {precision} is not built (no silent FP32 fallback)")
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not builder.platform_has_fast_int8:
            raise EngineError("this GPU has no fast INT8; export an fp16 engine instead")
        config.set_flag(trt.BuilderFlag.INT8)
        if not explicit_q:
            cache_path = bundle.path(CALIB_CACHE_NAME)
            config.int8_calibrator = _calibrator(restamp_cache(cache_path.read_bytes(), trt.__version__))
    if dla_core is not None:
        if dla_core >= builder.num_DLA_cores:
            raise EngineError(f"DLA core {dla_core} does not exist (this device has {builder.num_DLA_cores})")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    lo, opt, hi = _shapes(bundle, max_batch, dla_core)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, lo, opt, hi)
    config.add_optimization_profile(profile)

    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=True)

    where = f"DLA {dla_core}" if dla_core is not None else "GPU"
    say(
        f"building TensorRT {trt.__version__} engine ({precision}, {where}, batch {lo[0]}..{hi[0]}); "
        "this takes minutes on a Jetson"
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError("TensorRT failed to build the engine (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(memoryview(serialized)))
    os.replace(tmp, engine_path)
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return engine_path.stat().st_size


def get_or_build_engine(
    bundle: Bundle,
    *,
    precision: str,
    dla_core: int | None,
    cache_dir: Path,
    progress: Callable[[str], Any] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Path:
    """The path of an engine for this bundle, precision and device: from the cache, or built and cached."""
    return ensure_engine(
        bundle,
        precision=precision,
        dla_core=dla_core,
        cache_dir=cache_dir,
        progress=progress,
        max_batch=max_batch,
    ).path


def ensure_engine(
    bundle: Bundle,
    *,
    precision: str,
    dla_core: int | None,
    cache_dir: Path,
    progress: Callable[[str], Any] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> EngineReport:
    _require_tensorrt()
    import tensorrt as trt

    say = progress or log.info
    key = engine_key(
        bundle,
        precision=precision,
        dla_core=dla_core,
        trt_version=trt.__version__,
        device=cuda_device(),
        max_batch=max_batch,
    )
    path = cache_dir / key.filename(bundle.manifest.name)
    sidecar = path.with_suffix(".json")
    reason = "built (no cached engine)"
    if path.is_file() and sidecar.is_file():
        try:
            stored = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            stored = {}
        diffs = key.differences(stored)
        if not diffs:
            return EngineReport(path, key, False, "cached", path.stat().st_size)
        reason = "rebuilt: " + ", ".join(diffs)
        log.warning("engine %s does not match this device or bundle (%s): rebuilding", path.name, "; ".join(diffs))
    elif path.is_file():
        reason = "rebuilt: the cached engine has no key file"
        log.warning("engine %s has no key file: rebuilding", path.name)
    size = build_engine(
        bundle,
        path,
        precision=precision,
        dla_core=dla_core,
        max_batch=max_batch,
        timing_cache=cache_dir / TIMING_CACHE_NAME,
        progress=say,
    )
    sidecar.write_text(json.dumps(key.as_dict(), indent=2, sort_keys=True) + "\n")
    say(f"engine {path} ({size / 1e6:.1f} MB): {reason}")
    return EngineReport(path, key, True, reason, size)
