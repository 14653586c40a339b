"""Drawing the belt and procedural cucumbers, top-down at 1 px/mm (OpenCV, BGR).

Belt coordinates: x along the travel direction (mm, downstream positive, 0 = the camera's optical axis),
y across the belt (mm, 0 at the far edge). A frame covers x in [-W/2, W/2) and y in [0, H).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from device.grades import CucumberShape

BELT_BGR = np.array([118, 112, 104], np.float32)
SKIN_BGR = np.array([38, 104, 46], np.float32)
DEFECT_BGR = np.array([40, 92, 150], np.float32)
EDGE_SHADE = 0.5  # brightness of a body's outer third relative to its top
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices (cv2 `shift`)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where and how one item lies on the belt, and what its surface looks like from each view."""

    x_mm: float
    y_mm: float
    angle_deg: float  # of the long axis from the across-belt direction
    bend_sign: int  # which side the bend bulges to
    skin_seed: int  # warts and colour variation
    defect_views: tuple[tuple[int, ...], ...] = ()  # per defect: the views that see it


def outline(shape: CucumberShape, p: Placement, n: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre line (n, 2), left and right edges (n, 2) in belt mm, as (x, y) points."""
    s = np.linspace(-0.5, 0.5, n)
    t = np.deg2rad(p.angle_deg)
    axis = np.array([np.sin(t), np.cos(t)])  # long axis, mostly across the belt (y)
    normal = np.array([axis[1], -axis[0]])
    offset = p.bend_sign * shape.bend_mm * (1.0 - (2 * s) ** 2) - p.bend_sign * shape.bend_mm * 0.5
    centre = np.array([p.x_mm, p.y_mm]) + np.outer(s * shape.length_mm, axis) + np.outer(offset, normal)
    taper = 1.0 + (shape.taper - 1.0) * (s + 0.5)
    rounding = np.sqrt(np.clip(1.0 - np.abs(2 * s) ** 6, 0.0, 1.0))
    radius = 0.5 * shape.thickness_mm * taper * np.maximum(rounding, 0.05)
    # local normal of the bent centre line (derivative of the offset along s)
    slope = p.bend_sign * shape.bend_mm * (-8 * s) / shape.length_mm
    local_n = normal[None, :] - slope[:, None] * axis[None, :]
    local_n /= np.linalg.norm(local_n, axis=1, keepdims=True)
    left = centre + radius[:, None] * local_n
    right = centre - radius[:, None] * local_n
    return centre, left, right


def footprint_x(shape: CucumberShape, p: Placement) -> tuple[float, float]:
    """How far the item reaches upstream and downstream of its centre along the belt (mm, both >= 0)."""
    _c, left, right = outline(shape, p)
    xs = np.concatenate([left[:, 0], right[:, 0]]) - p.x_mm
    return float(-xs.min()), float(xs.max())


def _to_px(pts: np.ndarray, width: int) -> np.ndarray:
    px = np.empty_like(pts)
    px[:, 0] = pts[:, 0] + width / 2
    px[:, 1] = pts[:, 1]
    return np.round(px * (1 << _SHIFT)).astype(np.int32)


def draw_cucumber(img: np.ndarray, shape: CucumberShape, p: Placement, view: int = 0, gain: float = 1.0) -> None:
    """Draw one cucumber into `img` (BGR uint8, modified in place)."""
    h, w = img.shape[:2]
    rng = np.random.default_rng(p.skin_seed * 7 + view)
    centre, left, right = outline(shape, p)
    poly = np.concatenate([left, right[::-1]])
    skin = np.clip(SKIN_BGR * rng.uniform(0.85, 1.15) * gain, 0, 255)
    # Lit from above, a cylinder darkens towards its edges; where two items touch, that leaves a dark seam.
    cv2.fillPoly(img, [_to_px(poly, w)], (skin * EDGE_SHADE).tolist(), cv2.LINE_AA, _SHIFT)
    inner = np.concatenate([centre + 0.68 * (left - centre), (centre + 0.68 * (right - centre))[::-1]])
    cv2.fillPoly(img, [_to_px(inner, w)], skin.tolist(), cv2.LINE_AA, _SHIFT)
    # a lighter stripe where the light catches the skin
    hl_l = centre + 0.35 * (left - centre) + 0.15 * (right - centre)
    hl_r = centre + 0.05 * (left - centre)
    hl = np.concatenate([hl_l[4:-4], hl_r[4:-4][::-1]])
    cv2.fillPoly(img, [_to_px(hl, w)], np.clip(skin * 1.45, 0, 255).tolist(), cv2.LINE_AA, _SHIFT)
    # warts: small dark dots along the body
    n_warts = int(shape.length_mm / 6)
    idx = rng.integers(3, len(centre) - 3, size=n_warts)
    f = rng.uniform(-0.8, 0.8, size=n_warts)[:, None]
    towards = np.where(f > 0, left[idx] - centre[idx], centre[idx] - right[idx])
    wart_colour = np.clip(skin * 0.6, 0, 255).tolist()
    for x, y in _to_px(centre[idx] + f * towards, w):
        cv2.circle(img, (int(x), int(y)), int(1.2 * (1 << _SHIFT)), wart_colour, -1, cv2.LINE_AA, _SHIFT)
    for k, views in enumerate(p.defect_views):
        if view not in views:
            continue
        drng = np.random.default_rng(p.skin_seed * 31 + k)
        i = int(drng.integers(6, len(centre) - 6))
        pt = centre[i] + drng.uniform(-0.4, 0.4) * (left[i] - centre[i])
        axes = (int(drng.uniform(5, 10) * (1 << _SHIFT)), int(drng.uniform(4, 8) * (1 << _SHIFT)))
        colour = np.clip(DEFECT_BGR * drng.uniform(0.8, 1.2) * gain, 0, 255).tolist()
        cv2.ellipse(img, tuple(_to_px(pt[None], w)[0]), axes, float(drng.uniform(0, 180)), 0, 360, colour, -1,
                    cv2.LINE_AA, _SHIFT)
    del h


class BeltBackground:
    """The empty belt with a fixed texture, and a bank of sensor-noise images to add per frame.

    Frames are made with saturating uint8 OpenCV arithmetic, not float numpy: the render sits between a frame's
    exposure and its delivery, so its cost shows up in every decision latency (float passes took 2.5 ms of
    a 480x320 frame, these take about 0.2 ms).
    """

    def __init__(self, width: int, height: int, seed: int = 0, noise_sigma: float = 3.0) -> None:
        rng = np.random.default_rng(seed)
        texture = cv2.GaussianBlur(rng.normal(0, 6, (height, width)).astype(np.float32), (0, 0), 3)
        self.base = np.clip(BELT_BGR[None, None, :] + texture[:, :, None], 0, 255).round().astype(np.uint8)
        # Drawing fresh Gaussian noise per frame costs more than the rest of the render: reuse a bank, each
        # image split into its positive and negative parts (uint8), added and subtracted with saturation.
        bank = [np.round(rng.normal(0, noise_sigma, (height, width, 3))) for _ in range(6)]
        self.noise = [(np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)) for n in bank]
        self.has_noise = noise_sigma > 0
        self.width, self.height = width, height

    def frame(self, gain: float = 1.0) -> np.ndarray:
        return cv2.convertScaleAbs(self.base, alpha=gain)

    def add_noise(self, img: np.ndarray, index: int) -> np.ndarray:
        if not self.has_noise:
            return img
        plus, minus = self.noise[index % len(self.noise)]
        return cv2.subtract(cv2.add(img, plus), minus)


@dataclass(frozen=True, slots=True)
class Sprite:
    """One item drawn once, off the belt, for pasting into every frame it appears in: drawing a cucumber costs
    about 1 ms (polygons, warts, anti-aliasing), and the render sits between a frame's exposure and its delivery,
    so with five items in view it added 5 ms to every decision latency. Pasting costs a few tens of µs.

    `bgr` is premultiplied by the item's coverage (as anti-aliased drawing on black leaves it), at gain 1;
    `uncovered` is 1 - coverage, per channel; `dx` is the column of its left edge relative to the item's centre,
    `y0` the row of its top edge."""

    bgr: np.ndarray  # float32 (h, w, 3)
    uncovered: np.ndarray  # float32 (h, w, 3), 0..1
    dx: int
    y0: int

    def paste(self, img: np.ndarray, x_mm: float, gain: float = 1.0) -> None:
        """Composite onto `img` (BGR uint8, in place) with the item's centre at belt x_mm (nearest pixel)."""
        h, w = img.shape[:2]
        left = round(x_mm + w / 2) + self.dx
        sh, sw = self.uncovered.shape[:2]
        c0, c1 = max(0, left), min(w, left + sw)
        r0, r1 = max(0, self.y0), min(h, self.y0 + sh)
        if c0 >= c1 or r0 >= r1:
            return
        rows, cols = slice(r0 - self.y0, r1 - self.y0), slice(c0 - left, c1 - left)
        region = img[r0:r1, c0:c1]
        # under * (1 - coverage) + item * gain, in OpenCV's float ops (seven times numpy's here: 0.05 ms)
        under = cv2.multiply(region.astype(np.float32), self.uncovered[rows, cols])
        region[...] = cv2.convertScaleAbs(cv2.scaleAdd(self.bgr[rows, cols], gain, under))


def make_sprite(shape: CucumberShape, p: Placement, view: int = 0) -> Sprite:
    """Draw one item (as draw_cucumber would, at gain 1) into its own canvas; its x_mm does not matter."""
    _c, left, right = outline(shape, replace(p, x_mm=0.0))
    pts = np.concatenate([left, right])
    x0, x1 = int(np.floor(pts[:, 0].min())) - 3, int(np.ceil(pts[:, 0].max())) + 3
    y0, y1 = int(np.floor(pts[:, 1].min())) - 3, int(np.ceil(pts[:, 1].max())) + 3
    w, h = x1 - x0, y1 - y0
    # draw_cucumber puts belt x at column x + width/2 and belt y at row y: shift both so the box starts at (0, 0)
    local = replace(p, x_mm=-x0 - w / 2, y_mm=p.y_mm - y0)
    # drawn on black and on white: every anti-aliased edge (body, warts, a defect reaching over the body's edge)
    # blends linearly with what is under it, so the two give the premultiplied colour and the coverage exactly
    on_black = np.zeros((h, w, 3), np.uint8)
    on_white = np.full((h, w, 3), 255, np.uint8)
    draw_cucumber(on_black, shape, local, view, 1.0)
    draw_cucumber(on_white, shape, local, view, 1.0)
    black = on_black.astype(np.float32)
    uncovered = (on_white.astype(np.float32) - black).mean(axis=2, keepdims=True) / 255.0
    return Sprite(black, np.repeat(np.clip(uncovered, 0.0, 1.0), 3, axis=2), x0, y0)
