"""Names that tie the exporter, the bundle and the device together. Change them only with a bundle format bump."""

from __future__ import annotations

from typing import Final, Literal

BUNDLE_FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"
MODEL_NAME: Final = "model.onnx"
SIGNATURE_NAME: Final = "manifest.sig"
CALIB_CACHE_NAME: Final = "calib.cache"

# Tensor names of the ONNX models our exporter writes (a foreign model, e.g. FastestDet, states its own).
INPUT_NAME: Final = "images"
OUTPUT_NAMES: Final = {"classify": "logits", "detect": "detections", "segment": "mask_logits"}
BATCH_DIM: Final = "batch"

Task = Literal["classify", "detect", "segment"]
Precision = Literal["fp32", "fp16", "int8"]
ColorOrder = Literal["RGB", "BGR", "GRAY"]
ResizePolicy = Literal["stretch", "letterbox", "center_crop"]
