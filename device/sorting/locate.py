"""Finding items on the belt and cutting the crops the grading model sees.

The belt is a known, low-saturation background and produce is saturated, so items are found by colour
(HSV saturation) and connected components, without a learned detector: that is what fixed-camera graders do,
and it keeps the expensive model for grading. Crops are cut at a fixed scale (a fixed window in mm, not the
item's box), because size is what separates the grades: a crop resized to the item's box would hide it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The crop window in mm (along the belt x across the belt) at 1 px/mm, and the size the model sees.
CROP_WINDOW_MM = (96, 288)
CROP_HW = (48, 144)  # after rotating the long axis horizontal and halving the resolution
MIN_AREA_PX = 600  # smaller blobs are leaves, dirt or a sliver of an item at the frame edge
SAT_THRESHOLD = 70


@dataclass(frozen=True, slots=True)
class Blob:
    """An item seen in one frame, in frame pixels (1 px = 1 mm)."""

    cx: float
    cy: float
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int
    area: int


def item_mask(frame_bgr: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2HSV)
    mask = (hsv[:, :, 1] > SAT_THRESHOLD).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


def find_items(frame_bgr: np.ndarray, edge_px: int = 2) -> tuple[list[Blob], list[Blob]]:
    """Return (complete, partial) blobs: partial ones touch the left or right frame edge."""
    n, _labels, stats, centroids = cv2.connectedComponentsWithStats(item_mask(frame_bgr), connectivity=8)
    w = frame_bgr.shape[1]
    complete: list[Blob] = []
    partial: list[Blob] = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < MIN_AREA_PX:
            continue
        blob = Blob(float(centroids[i][0]), float(centroids[i][1]), x, y, x + bw, y + bh, area)
        (partial if x <= edge_px or x + bw >= w - edge_px else complete).append(blob)
    return complete, partial


def crop_item(frame_bgr: np.ndarray, blob: Blob) -> np.ndarray:
    """The fixed-scale crop around a blob, long axis horizontal, at CROP_HW, BGR uint8."""
    cw, ch = CROP_WINDOW_MM  # window width along x, height along y
    x0 = round(blob.cx - cw / 2)
    y0 = round(blob.cy - ch / 2)
    h, w = frame_bgr.shape[:2]
    # pad with the border colour when the window runs off the frame (items near the belt's edge)
    px0, py0, px1, py1 = max(0, -x0), max(0, -y0), max(0, x0 + cw - w), max(0, y0 + ch - h)
    src = frame_bgr[max(0, y0) : min(h, y0 + ch), max(0, x0) : min(w, x0 + cw)]
    if px0 or py0 or px1 or py1:
        src = cv2.copyMakeBorder(src, py0, py1, px0, px1, cv2.BORDER_REPLICATE)
    rotated = cv2.rotate(src, cv2.ROTATE_90_CLOCKWISE)  # (cw x ch) -> long axis horizontal
    return cv2.resize(rotated, (CROP_HW[1], CROP_HW[0]), interpolation=cv2.INTER_AREA)
