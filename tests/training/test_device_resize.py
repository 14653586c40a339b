"""Training measures a model on the pixels the device feeds it: one resize function for both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from device.bundle import InputSpec
from device.preprocess import Preprocessor
from training.data import DataInfo
from training.presets import DeviceResize, eval_transform


@pytest.mark.parametrize("hw", [(348, 348), (37, 50), (96, 288)])
def test_the_training_eval_transform_gives_the_device_preprocessor_s_input(hw):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    mean, std = (0.498, 0.498, 0.498), (0.502, 0.502, 0.502)
    info = DataInfo(spec="t", source="t", labels=["a", "b"], in_channels=3, input_size=(48, 144), mean=mean, std=std)
    trained_on = eval_transform(info)(torch.from_numpy(rgb.transpose(2, 0, 1).copy()))
    spec = InputSpec(name="input", shape=(1, 3, 48, 144), color_order="RGB", scale=1 / 255, mean=mean, std=std)
    device_feeds = Preprocessor(spec)([rgb[:, :, ::-1].copy()])[0]  # the camera gives BGR
    np.testing.assert_allclose(trained_on.numpy(), device_feeds, atol=1e-5)


def test_device_resize_keeps_one_and_nine_channel_images():
    for c in (1, 9):
        x = torch.randint(0, 256, (c, 64, 64), dtype=torch.uint8)
        assert DeviceResize((32, 16))(x).shape == (c, 32, 16)
