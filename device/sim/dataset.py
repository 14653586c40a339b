"""Item crops rendered by the twin, cut by the same code the sorter runs (training data for the demo model)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from device.grades import GRADES, sample_shape
from device.sim.render import BeltBackground, Placement, draw_cucumber, footprint_x
from device.sorting.locate import CROP_HW, locate

__all__ = ["CROP_HW", "twin_crops"]

_FRAME_W, _FRAME_H = 320, 320  # narrower than the camera's frame: the crop window is 96 mm wide


def twin_crops(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` crops (uint8 RGB, N x 48 x 144 x 3) with balanced grade labels (int64 indexes into GRADES).

    Each crop is of an item drawn on the belt with random neighbours, lighting and sensor noise, found and
    cut by `device.sorting.locate` exactly as at run time. Deterministic in `seed`.
    """
    rng = np.random.default_rng(seed)
    backgrounds = [BeltBackground(_FRAME_W, _FRAME_H, seed * 10 + k, float(s)) for k, s in enumerate((1, 3, 5))]
    labels = np.array([i % len(GRADES) for i in range(count)], np.int64)
    rng.shuffle(labels)
    out = np.empty((count, *CROP_HW, 3), np.uint8)
    for n, label in enumerate(labels):
        for _attempt in range(10):
            crop = _one_crop(GRADES[label], rng, backgrounds)
            if crop is not None:
                out[n] = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
                break
        else:
            raise RuntimeError("the locator kept missing the rendered item: the renderer and locator disagree")
    return out, labels


def _random_placement(x: float, rng: np.random.Generator) -> Placement:
    return Placement(
        x_mm=x,
        y_mm=float(_FRAME_H / 2 + rng.normal(0, 12)),
        angle_deg=float(rng.uniform(-6, 6)),
        bend_sign=int(rng.choice([-1, 1])),
        skin_seed=int(rng.integers(1 << 30)),
        defect_views=(),
    )


def _one_crop(grade: str, rng: np.random.Generator, backgrounds: list[BeltBackground]) -> np.ndarray | None:
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    gain = float(rng.uniform(0.85, 1.15))
    img = bg.frame(gain)
    shape = sample_shape(grade, rng)
    x = float(rng.uniform(-20, 20))
    p = _random_placement(x, rng)
    if shape.defects:
        p = Placement(p.x_mm, p.y_mm, p.angle_deg, p.bend_sign, p.skin_seed, tuple((0,) for _ in range(shape.defects)))
    back, front = footprint_x(shape, p)
    for side in (-1, 1):  # neighbours, as on a busy belt, down to touching
        if rng.random() < 0.5:
            other = sample_shape(str(rng.choice(GRADES)), rng)
            op = _random_placement(0.0, rng)
            o_back, o_front = footprint_x(other, op)
            gap = float(rng.choice([rng.uniform(0, 4), rng.uniform(4, 80)]))
            nx = x + front + o_back + gap if side > 0 else x - back - o_front - gap
            draw_cucumber(img, other, replace(op, x_mm=nx), 0, gain)
    draw_cucumber(img, shape, p, 0, gain)
    img = bg.add_noise(img, int(rng.integers(1000)))
    view = locate(img)
    blobs = view.complete
    centre_px = x + _FRAME_W / 2
    best = min(blobs, key=lambda b: abs(b.cx - centre_px), default=None)
    if best is None or abs(best.cx - centre_px) > 15:
        return None
    return view.crop(best)
