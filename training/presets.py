"""Augmentation presets (torchvision transforms v2 on uint8 CHW tensors), one place for all of them.

The evaluation preset is the device's preprocessing: resize (stretch) to the input size, scale to 0..1,
normalise with mean/std. Training presets add augmentation that keeps the label true for that kind of data.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from training.data import DataError, DataInfo

PRESETS = ("none", "digits", "crops", "photos", "small")


def _normalise(info: DataInfo) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(info.mean), list(info.std))]


def eval_transform(info: DataInfo) -> v2.Compose:
    return v2.Compose([v2.Resize(list(info.input_size), antialias=True), *_normalise(info)])


def train_transform(info: DataInfo, preset: str | None = None) -> v2.Compose:
    name = preset or info.augment
    size = list(info.input_size)
    if name == "none":
        return eval_transform(info)
    if name == "digits":  # small shifts, turns and scale changes that keep a digit the same digit
        aug: list[v2.Transform] = [
            v2.Resize(size, antialias=True),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        ]
    elif name == "crops":  # the grade hangs on absolute size and bend: flip and relight, never rescale
        aug = [
            v2.Resize(size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.15),
        ]
    elif name == "photos":
        aug = [
            v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25),
        ]
    elif name == "small":  # CIFAR-style; works for the 9-channel three-view layout too
        aug = [v2.Resize(size, antialias=True), v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()]
    else:
        raise DataError(f"unknown augmentation preset '{name}'; known presets: {', '.join(PRESETS)}")
    return v2.Compose([*aug, *_normalise(info)])
