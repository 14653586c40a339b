"""Checkpoint -> bundle: ONNX export, parity, reduced precision behind the accuracy gate, manifest, signature.

Everything is built in a staging folder beside the output and moved into place only when every check passed,
so a refused export leaves no bundle behind (and an older bundle at the same path untouched).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
from pydantic import ValidationError

from device.bundle import (
    Bundle,
    InputSpec,
    Manifest,
    OutputSpec,
    Recipe,
    read_bundle,
    sha256_file,
    write_bundle,
)
from device.contract import (
    BATCH_DIM,
    CALIB_CACHE_NAME,
    INPUT_NAME,
    MODEL_NAME,
    OUTPUT_NAMES,
    Precision,
    ResizePolicy,
)
from export.errors import AccuracyGateError, ExportError, ParityError
from export.onnx_export import DEFAULT_OPSET, export_onnx, metadata_entries

if TYPE_CHECKING:
    import torch

    from export.precision import GateReport

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
TORCH_PROGRAM_NAME = "model.pt2"  # device/backends/torch_backend.py looks for it


@dataclass
class ImageSet:
    """Preprocessed images (NCHW float32, as the model sees them), their labels and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str  # "<dataset spec>:<split>[n]"

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels) or len(self.images) == 0:
            raise ExportError(
                f"{self.source}: expected N>0 NCHW images with N labels, got "
                f"{self.images.shape} and {self.labels.shape}"
            )


@dataclass
class ExportOptions:
    precision: Precision = "fp32"
    name: str | None = None
    version: str | None = None
    opset: int = DEFAULT_OPSET
    command: str = ""
    gate_tolerance_points: float = 1.0  # top-1 drop allowed against FP32, in percentage points
    sign_key: Path | None = None
    force: bool = False
    threads: int = 1
    checkpoint_path: Path | None = None
    int8_scheme: str = "onnxruntime"  # or "tensorrt" (symmetric, for TensorRT explicit quantization)
    torch_program: bool = False  # also write model.pt2 (torch.export) for the device's torch backend


@dataclass
class ExportResult:
    bundle: Bundle
    parity: dict[str, Any]
    gate: GateReport | None = None


def _plain(obj: Any) -> Any:
    """Checkpoint metadata as JSON-able values (tensors and numpy arrays become lists)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )  # timeout: a wedged filesystem must not hang an export
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def input_spec_from_checkpoint(meta: dict[str, Any]) -> InputSpec:
    try:
        h, w = (int(x) for x in meta["input_size"])
        channels = int(meta.get("in_channels", 3))
        color = str(meta.get("color_order", "RGB"))
        resize = str(meta.get("resize", "stretch"))
        mean = tuple(float(x) for x in meta["mean"])
        std = tuple(float(x) for x in meta["std"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"the checkpoint's input description is incomplete or malformed ({exc!r})") from exc
    if resize not in get_args(ResizePolicy):
        raise ExportError(
            f"the checkpoint's resize policy '{resize}' is not one the device knows "
            f"({', '.join(get_args(ResizePolicy))})"
        )
    if len(mean) != channels or len(std) != channels:
        raise ExportError(f"the checkpoint has {channels} input channels but {len(mean)} means and {len(std)} stds")
    try:
        return InputSpec.model_validate(
            {
                "name": INPUT_NAME,
                "shape": (BATCH_DIM, channels, h, w),
                "dtype": "float32",
                "color_order": color,
                "scale": float(meta.get("scale", 1 / 255)),
                "mean": mean,
                "std": std,
                "resize": resize,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ExportError(f"the checkpoint's input description is invalid: {first['loc'][0]}: {first['msg']}") from exc


def model_card(
    meta: dict[str, Any], spec: InputSpec, precision: str, opset: int, checkpoint_sha256: str
) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import onnxslim
    import torch

    card = dict(_plain(meta.get("card") or {}))
    card.update(
        {
            "arch": meta.get("arch"),
            "num_classes": int(meta["num_classes"]),
            "in_channels": spec.channels,
            "input_size": [spec.height, spec.width],
            "precision": precision,
            "training": {
                "epoch": meta.get("epoch"),
                "git_revision": meta.get("git_revision", ""),
                "args": _plain(meta.get("args") or {}),
            },
            "export": {
                "opset": opset,
                "checkpoint_sha256": checkpoint_sha256,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxslim": onnxslim.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        }
    )
    return card


def _finalize_onnx(path: Path, card: dict[str, Any], labels: tuple[str, ...]) -> None:
    """Rewrite the model card into the ONNX metadata (the variant's precision) and check the file again."""
    import onnx

    from export.onnx_export import set_metadata

    proto = onnx.load(str(path))
    set_metadata(proto, metadata_entries(card, labels))
    proto.producer_name = "edgesort"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the {card.get('precision')} ONNX graph is invalid: {exc}") from exc
    onnx.save(proto, str(path))


def export_torch_program(model: torch.nn.Module, input_shape: tuple[int, int, int], work: Path) -> Path:
    """model.pt2: the model as a torch.export program with a dynamic batch (the device's torch backend)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(
            model, (torch.zeros((2, *input_shape)),), dynamic_shapes=({0: batch},), strict=False
        )
    except Exception as exc:  # torch.export raises many types; its message names the unsupported construct
        raise ExportError(f"torch.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    out = work / TORCH_PROGRAM_NAME
    torch.export.save(program, str(out))
    return out


def _place(staging: Path, out_dir: Path, force: bool) -> None:
    if out_dir.exists():
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        elif force:
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        else:
            raise ExportError(f"{out_dir} already exists and is not empty; pass --force to replace it")
    os.replace(staging, out_dir)


def build_bundle(
    model: torch.nn.Module,
    meta: dict[str, Any],
    out_dir: Path,
    options: ExportOptions,
    *,
    parity_set: ImageSet,
    calib_set: ImageSet | None = None,
    heldout_set: ImageSet | None = None,
) -> ExportResult:
    """Export a classifier `model` described by checkpoint `meta` into a verified bundle at `out_dir`.

    `parity_set`: real images for ONNX Runtime vs PyTorch. `calib_set`: calibration images (INT8, and the
    TensorRT calibration cache). `heldout_set`: labelled images the accuracy gate evaluates (FP16/INT8).
    Raises ParityError / AccuracyGateError / ExportError and writes nothing when a check fails.
    """
    from export.parity import check_parity

    precision = options.precision
    if precision not in get_args(Precision):
        raise ExportError(f"unknown precision '{precision}' (fp32, fp16 or int8)")
    if precision != "fp32" and heldout_set is None:
        raise ExportError(f"{precision} export needs held-out labelled images for the accuracy gate")
    if precision == "int8" and calib_set is None:
        raise ExportError("int8 export needs calibration images (--calib SPEC)")
    labels = tuple(str(x) for x in meta["labels"])
    if len(labels) != int(meta["num_classes"]):
        raise ExportError(f"the checkpoint has {meta['num_classes']} classes but {len(labels)} labels")
    spec = input_spec_from_checkpoint(meta)
    ckpt_sha = sha256_file(options.checkpoint_path) if options.checkpoint_path else ""
    card = model_card(meta, spec, precision, options.opset, ckpt_sha)
    model = model.eval()

    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    work = Path(tempfile.mkdtemp(prefix="edgesort-export-"))
    try:
        fp32_path = work / "model.fp32.onnx"
        export_onnx(
            model,
            fp32_path,
            input_shape=(spec.channels, spec.height, spec.width),
            task="classify",
            opset=options.opset,
            metadata=metadata_entries({**card, "precision": "fp32"}, labels),
        )
        rep32 = check_parity(model, fp32_path, parity_set.images, source=parity_set.source, threads=options.threads)
        parity: dict[str, Any] = {"fp32": rep32.as_dict()}
        if not rep32.passed:
            raise ParityError(
                f"ONNX Runtime and PyTorch disagree on {rep32.images} images from "
                f"{rep32.source}: {rep32.reason()}; no bundle written"
            )
        log.info(
            "parity fp32: max abs diff %.3g, top-1 agreement %.2f%% on %d images",
            rep32.max_abs_diff,
            100 * rep32.top1_agreement,
            rep32.images,
        )

        files: dict[str, Path] = {}
        gate = None
        final = fp32_path
        if precision != "fp32":
            from export.precision import accuracy_gate, make_variant

            assert heldout_set is not None  # checked above
            final, variant_info = make_variant(
                fp32_path,
                work,
                precision,
                calib_set=calib_set,
                threads=options.threads,
                int8_scheme=options.int8_scheme,
            )
            if "quantization" in variant_info:
                card["quantization"] = variant_info["quantization"]
            repv = check_parity(
                model,
                final,
                parity_set.images,
                source=parity_set.source,
                precision=precision,
                max_abs_diff=None,
                min_agreement=None,
                threads=options.threads,
            )
            parity[precision] = repv.as_dict()
            parity[precision].update(variant_info)
            gate = accuracy_gate(
                fp32_path,
                final,
                heldout_set,
                precision=precision,
                tolerance_points=options.gate_tolerance_points,
                threads=options.threads,
            )
            parity["accuracy_gate"] = gate.as_dict()
            if not gate.passed:
                raise AccuracyGateError(gate.reason())
        if calib_set is not None and precision != "int8":
            # A float bundle with a calibration cache lets TensorRT build INT8 on the device (implicit
            # quantization, also on DLA); an int8 bundle carries its scales in the Q/DQ nodes instead.
            from export.calibration import write_trt_calibration_cache

            cache = work / CALIB_CACHE_NAME
            parity["calibration"] = write_trt_calibration_cache(fp32_path, calib_set, cache, threads=options.threads)
            files[CALIB_CACHE_NAME] = cache
        _finalize_onnx(final, card, labels)
        files[MODEL_NAME] = final
        if options.torch_program:
            if precision != "fp32":
                raise ExportError("model.pt2 is the FP32 PyTorch model; add it to fp32 bundles only")
            files[TORCH_PROGRAM_NAME] = export_torch_program(model, (spec.channels, spec.height, spec.width), work)

        name = options.name or str(card.get("name") or meta.get("arch") or "model")
        version = options.version or str(card.get("version") or f"e{meta.get('epoch', 0)}")
        manifest = Manifest(
            name=name,
            version=version,
            task="classify",
            labels=labels,
            input=spec,
            outputs=(OutputSpec(name=OUTPUT_NAMES["classify"], shape=(BATCH_DIM, len(labels)), meaning="logits"),),
            precision=precision,
            postprocess={"activation": "softmax"},
            metrics=_plain(meta.get("metrics") or {}),
            dataset=_plain(meta.get("dataset") or {}),
            recipe=Recipe(
                command=options.command,
                git_revision=git_revision(),
                created=datetime.now(UTC).replace(microsecond=0).isoformat(),
            ),
            parity=_plain(parity),
            card=card,
        )
        write_bundle(staging, manifest, files)
        if options.sign_key is not None:
            from device.signing import sign_bundle

            sign_bundle(staging, options.sign_key)
        _place(staging, out_dir, options.force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    bundle = read_bundle(out_dir)
    return ExportResult(bundle=bundle, parity=parity, gate=gate)
