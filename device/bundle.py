"""The model bundle: the only thing that travels from the workstation to the device (DESIGN: Model bundle).

A directory (or a `.tar` of one) holding `model.onnx`, `manifest.json`, optionally `calib.cache` and
`manifest.sig`. The manifest describes everything the device needs, so a bundle runs with no flags. Every file
is listed with its sha256 and size; `verify_bundle` refuses a bundle where any of them differs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from device.contract import (
    BUNDLE_FORMAT_VERSION,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ColorOrder,
    Precision,
    ResizePolicy,
    Task,
)
from device.errors import BundleError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    name: str = Field(description="ONNX input tensor name")
    shape: tuple[int | str, int, int, int] = Field(description="NCHW; the batch dimension is a name when dynamic")
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    color_order: ColorOrder = "RGB"
    scale: float = Field(1 / 255, description="pixel value multiplier applied before mean/std")
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize: ResizePolicy = "stretch"

    @property
    def height(self) -> int:
        return self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[3]

    @property
    def channels(self) -> int:
        return self.shape[1]


class OutputSpec(_Strict):
    name: str
    shape: tuple[int | str, ...]
    meaning: Literal["logits", "probabilities", "fastestdet_grid", "boxes_scores_classes", "mask_logits"] = Field(
        description="how the device turns this tensor into a result; see device/postprocess.py"
    )


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Recipe(_Strict):
    command: str = ""
    git_revision: str = ""
    created: str = ""  # ISO 8601, UTC


class Manifest(_Strict):
    """manifest.json. Unknown keys are refused so that a typo never silently changes behaviour."""

    format_version: int = BUNDLE_FORMAT_VERSION
    name: str
    version: str
    task: Task
    labels: tuple[str, ...]
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    precision: Precision = "fp32"
    files: dict[str, FileEntry] = Field(default_factory=dict)
    postprocess: dict[str, Any] = Field(default_factory=dict, description="task parameters (thresholds, decoder)")
    metrics: dict[str, Any] = Field(default_factory=dict, description="training metrics: top1, per class, confusion")
    dataset: dict[str, Any] = Field(default_factory=dict, description="spec and counts of the training data")
    recipe: Recipe = Recipe()
    parity: dict[str, Any] = Field(default_factory=dict, description="export parity report (ONNX vs PyTorch)")
    card: dict[str, Any] = Field(default_factory=dict, description="model card: arch, input size, notes")

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != BUNDLE_FORMAT_VERSION:
            raise ValueError(f"bundle format {v} is not supported (this device reads format {BUNDLE_FORMAT_VERSION})")
        return v

    def model_id(self) -> str:
        """Short id used in telemetry and logs: name@version/precision#sha8."""
        sha = self.files.get("model.onnx")
        return f"{self.name}@{self.version}/{self.precision}#{sha.sha256[:8] if sha else 'nofile'}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_bytes(manifest: Manifest) -> bytes:
    """The canonical bytes of manifest.json (what `manifest.sig` signs)."""
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Bundle:
    """A bundle opened from disk: its directory and its parsed manifest."""

    root: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.root / "model.onnx"

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def signed(self) -> bool:
        return (self.root / SIGNATURE_NAME).is_file()


def write_bundle(out_dir: Path, manifest: Manifest, files: dict[str, Path]) -> Bundle:
    """Copy `files` (bundle name -> source path) into `out_dir` and write a manifest listing their hashes.

    `manifest.files` is replaced by the hashes of what was written. An existing manifest.sig is removed,
    because it no longer matches.
    """
    if "model.onnx" not in files:
        raise BundleError("a bundle needs a model.onnx")
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, FileEntry] = {}
    for name, src in sorted(files.items()):
        if "/" in name or name in (MANIFEST_NAME, SIGNATURE_NAME):
            raise BundleError(f"'{name}' cannot be a bundle file name")
        dst = out_dir / name
        if Path(src).resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        entries[name] = FileEntry(sha256=sha256_file(dst), size=dst.stat().st_size)
    final = manifest.model_copy(update={"files": entries})
    (out_dir / MANIFEST_NAME).write_bytes(manifest_bytes(final))
    (out_dir / SIGNATURE_NAME).unlink(missing_ok=True)
    return Bundle(out_dir, final)


def _extract_tar(path: Path) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="edgesort-bundle-"))
    try:
        with tarfile.open(path) as tar:
            tar.extractall(dest, filter="data")  # "data" refuses absolute paths, .. and device files
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{path}: not a readable bundle archive ({exc})") from exc
    found = list(dest.rglob(MANIFEST_NAME))
    if len(found) != 1:
        raise BundleError(f"{path}: the archive holds {len(found)} manifest.json files, expected 1")
    return found[0].parent


def read_bundle(path: str | Path) -> Bundle:
    """Open a bundle directory or .tar and parse its manifest. Does not check hashes: see `verify_bundle`."""
    p = Path(path)
    if not p.exists():
        raise BundleError(f"bundle not found: {p}")
    root = _extract_tar(p) if p.is_file() else p
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{p}: no {MANIFEST_NAME} in the bundle")
    try:
        raw = json.loads(mpath.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc})") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise BundleError(f"{mpath}: {where}: {first['msg']}") from exc
    return Bundle(root, manifest)


def verify_bundle(
    path: str | Path, *, require_signature: bool = False, trusted_keys: list[Path] | None = None
) -> Bundle:
    """Open a bundle and check every listed file's size and sha256, and its signature when asked.

    Raises BundleError naming the first file that differs. A signature, when present and keys are given, is
    always checked; when `require_signature` is set, a missing one is refused too.
    """
    bundle = read_bundle(path)
    m = bundle.manifest
    if "model.onnx" not in m.files:
        raise BundleError(f"{bundle.root}: the manifest lists no model.onnx")
    for name, entry in sorted(m.files.items()):
        f = bundle.root / name
        if not f.is_file():
            raise BundleError(f"{bundle.root}: {name} is listed in the manifest but missing")
        size = f.stat().st_size
        if size != entry.size:
            raise BundleError(f"{bundle.root}: {name} is {size} bytes, the manifest says {entry.size}")
        if sha256_file(f) != entry.sha256:
            raise BundleError(f"{bundle.root}: {name} does not match its sha256 in the manifest (altered?)")
    if require_signature or (trusted_keys and bundle.signed):
        from device.signing import verify_manifest_signature

        verify_manifest_signature(bundle.root, trusted_keys or [])
    return bundle


def pack_bundle(bundle_dir: Path, tar_path: Path) -> Path:
    """Write a .tar of a bundle directory (files at the archive's top level)."""
    with tarfile.open(tar_path, "w") as tar:
        for f in sorted(bundle_dir.iterdir()):
            tar.add(f, arcname=f.name)
    return tar_path
