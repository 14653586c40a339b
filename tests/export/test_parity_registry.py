"""FP32 parity (ONNX Runtime vs PyTorch: max abs diff <= 1e-4, 100% top-1 agreement) for every registered
classifier, on real photos (Grocery Store val) or real digits (MNIST val) at small input sizes.

EfficientNet-Lite0 carries its ImageNet weights (the only registered model with pretrained weights); the
others are freshly initialised, which exercises the same operators and graph rewrites.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from device.bundle import InputSpec
from device.preprocess import Preprocessor
from export.build import ExportOptions, ImageSet, build_bundle
from export.samples import iter_raw_images
from training.models import get_model, get_model_info, list_models

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGES = 16


def _input(name: str) -> tuple[int, tuple[int, int]]:
    """(channels, input size): digit models at 28x28 gray, the rest at their own small size or 64x64 RGB."""
    size = get_model_info(name).default_input_size
    if size == (28, 28):
        return 1, size
    if size is not None and size[0] * size[1] <= 96 * 160:
        return 3, size
    return 3, (64, 64)


@pytest.mark.parametrize("name", list_models())
def test_fp32_parity_of_every_registered_classifier(name: str, data_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    channels, (h, w) = _input(name)
    info = get_model_info(name)
    model = get_model(name, 10, channels, pretrained=info.supports_pretrained, input_size=(h, w)).eval()
    if channels == 1:
        spec = f"mnist:{data_root / 'mnist'}"
        mean, std, color = (0.1307,), (0.3081,), "GRAY"
    else:
        spec = f"grocery:{data_root / 'grocery_store'}"
        mean, std, color = info.pretrained_mean or IMAGENET_MEAN, info.pretrained_std or IMAGENET_STD, "RGB"
    input_spec = InputSpec(name="images", shape=("batch", channels, h, w), color_order=color, mean=mean, std=std)
    raw = list(iter_raw_images(spec, "val", IMAGES))
    x = np.array(Preprocessor(input_spec, max_batch=IMAGES)([img for img, _ in raw]))
    images = ImageSet(x, np.array([y for _, y in raw]), f"{spec}:val[{IMAGES}]")
    meta = {
        "arch": name,
        "num_classes": 10,
        "in_channels": channels,
        "input_size": [h, w],
        "mean": list(mean),
        "std": list(std),
        "color_order": color,
        "resize": "stretch",
        "labels": [f"c{i}" for i in range(10)],
        "args": {},
        "metrics": {},
        "dataset": {"spec": spec},
        "epoch": 0,
        "git_revision": "",
        "card": {},
    }
    res = build_bundle(model, meta, tmp_path / name, ExportOptions(), parity_set=images)
    p = res.parity["fp32"]
    assert p["passed"] and p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0, p
    assert p["images"] == IMAGES
