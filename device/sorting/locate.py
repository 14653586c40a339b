"""Finding items on the belt and cutting the crops the grading model sees.

The belt is a known, low-saturation background and produce is saturated, so items are found by colour
(HSV saturation) and connected components, without a learned detector: that is what fixed-camera graders do,
and it keeps the expensive model for grading. Items that touch are told apart by their bright tops: lit from
above, a round body is darker at its edges, so the seam between two touching items is dark and the bright
cores stay separate; every item pixel then belongs to its nearest core.

The locator works on a half-resolution copy of the frame (2 mm per pixel): items are 20 mm and more across,
so nothing it decides needs the full resolution, and a quarter of the pixels makes it about three times
cheaper (it was the pipeline's slowest stage). The copy is also the crop source: the model's crops are at
half resolution anyway, so a crop is a slice and a rotation, with no resize. Blobs are reported in frame
pixels.

Crops are cut at a fixed scale (a fixed window in mm, not the item's box), because size is what separates the
grades: a crop resized to the item's box would hide it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

# The crop window in mm (along the belt x across the belt) at 1 px/mm, and the size the model sees.
CROP_WINDOW_MM = (96, 288)
CROP_HW = (48, 144)  # after rotating the long axis horizontal and halving the resolution
SCALE = 2  # frame pixels per locator pixel; also the frame-to-crop scale (CROP_WINDOW_MM / CROP_HW)
MIN_AREA_PX = 600  # (frame pixels) smaller blobs are leaves, dirt or a sliver of an item at the frame edge
SAT_THRESHOLD = 70
# The thickest item the line grades is 40 mm: a blob whose inscribed circle is wider than that is two items
# touching along their length, which cannot be cut apart reliably; it is marked ambiguous (default bin).
MAX_ITEM_RADIUS_PX = 23.0  # (frame pixels)
CORE_FRACTION = 0.72  # a lit top is brighter than this fraction of the item's 90th-percentile brightness
CORE_MIN_PX = 150  # (frame pixels) smaller bright patches are glints, not an item's top

_S2 = SCALE * SCALE
_KERNEL = np.ones((3, 3), np.uint8)


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
    ambiguous: bool = False  # two or more items that could not be separated


@dataclass(frozen=True, slots=True)
class BeltView:
    """One frame as the locator saw it: its half-resolution copy and the items found in it."""

    small: np.ndarray  # BGR uint8, the frame at 1 / SCALE
    complete: list[Blob] = field(default_factory=list)
    partial: list[Blob] = field(default_factory=list)  # touching the left or right frame edge

    def crop(self, blob: Blob) -> np.ndarray:
        """The fixed-scale crop around a blob, long axis horizontal, at CROP_HW, BGR uint8."""
        return _crop_small(self.small, blob)


def half_resolution(frame_bgr: np.ndarray) -> np.ndarray:
    """The frame averaged over 2x2 pixel blocks (OpenCV's exact-2x area path: a few tens of microseconds)."""
    h, w = frame_bgr.shape[:2]
    even = frame_bgr[: h - h % SCALE, : w - w % SCALE]
    return cv2.resize(even, (w // SCALE, h // SCALE), interpolation=cv2.INTER_AREA)


def locate(frame_bgr: np.ndarray, edge_px: int = 2) -> BeltView:
    """Find the items in a frame; `edge_px` (frame pixels) is how close to the side edges makes one partial.

    Items are found on the half-resolution copy; each one's lit cores are then found at full resolution
    inside its box, because the dark seam between two touching items is only a pixel or two wide and
    averaging would bridge it."""
    small = half_resolution(frame_bgr)
    mask = item_mask(small)
    # Grana's block-based labelling: the same components as OpenCV's default, three times faster here
    n, labels, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask, 8, cv2.CV_32S, cv2.CCL_GRANA
    )
    w = frame_bgr.shape[1]
    complete: list[Blob] = []
    partial: list[Blob] = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area * _S2 < MIN_AREA_PX:
            continue
        comp_small = (labels[y : y + bh, x : x + bw] == i).astype(np.uint8)
        comp = cv2.resize(comp_small, (bw * SCALE, bh * SCALE), interpolation=cv2.INTER_NEAREST)
        fx, fy = x * SCALE, y * SCALE
        region = frame_bgr[fy : fy + bh * SCALE, fx : fx + bw * SCALE]
        value = cv2.max(cv2.max(region[:, :, 0], region[:, :, 1]), region[:, :, 2])  # HSV's V
        # the whole component as one blob, from the half-resolution statistics: `comp` is their nearest-neighbour
        # upscale, so its box, area and centroid follow exactly (a pixel at u covers u*S .. u*S+S-1)
        cx, cy = (float(c) * SCALE + (SCALE - 1) / 2 for c in centroids[i])
        whole = Blob(cx, cy, fx, fy, fx + bw * SCALE, fy + bh * SCALE, area * _S2)
        for blob in _split_touching(comp, _lit_core(comp, value), whole):
            at_edge = blob.x0 <= edge_px or blob.x1 >= w - edge_px
            (partial if at_edge else complete).append(blob)
    return BeltView(small, complete, partial)


def find_items(frame_bgr: np.ndarray, edge_px: int = 2) -> tuple[list[Blob], list[Blob]]:
    """Return (complete, partial) blobs: partial ones touch the left or right frame edge."""
    view = locate(frame_bgr, edge_px)
    return view.complete, view.partial


def item_mask(image_bgr: np.ndarray) -> np.ndarray:
    """Item pixels (saturated, specks opened away) as a uint8 mask, at the image's own resolution."""
    hsv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)
    return cv2.morphologyEx((hsv[:, :, 1] > SAT_THRESHOLD).astype(np.uint8), cv2.MORPH_OPEN, _KERNEL)


def _lit_core(comp: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The bright tops inside one component; the threshold follows the item's own brightness (lighting)."""
    # the 90th percentile of the item's brightness, from a histogram (cheaper than sorting its pixels)
    cum = np.cumsum(cv2.calcHist([value], [0], comp, [256], [0, 256]).ravel())
    p90 = int(np.searchsorted(cum, int(0.9 * (cum[-1] - 1)) + 1))
    # uint8 pixels: value > thr  <=>  value > floor(thr), which is what OpenCV's threshold compares
    _t, core = cv2.threshold(value, CORE_FRACTION * p90, 1, cv2.THRESH_BINARY)
    core &= comp
    return cv2.morphologyEx(core, cv2.MORPH_CLOSE, _KERNEL) & comp  # fill wart dots


def _split_touching(comp: np.ndarray, core: np.ndarray, whole: Blob) -> list[Blob]:
    """One component (frame pixels; `whole` is it as one blob) -> one blob per lit core; a part still too thick
    for one item is flagged ambiguous."""
    ox, oy = whole.x0, whole.y0
    # labels without OpenCV's statistics and the areas by a bincount: about half the cost (measured on the
    # twin's cores, 7400 px on average: 55 -> 30 us), and this runs for every item in every frame
    k, core_labels = cv2.connectedComponentsWithAlgorithm(core, 4, cv2.CV_16U, cv2.CCL_DEFAULT)
    areas = np.bincount(core_labels.ravel(), minlength=k)
    keep = [j for j in range(1, k) if areas[j] >= CORE_MIN_PX]
    if len(keep) >= 2:
        seeds = np.isin(core_labels, keep)
        # each pixel takes the label of its nearest seed pixel (the zero pixels of the inverted seed mask)
        _d, nearest = cv2.distanceTransformWithLabels((~seeds).astype(np.uint8), cv2.DIST_L2, 5,
                                                      labelType=cv2.DIST_LABEL_PIXEL)
        label_of = np.zeros(int(nearest.max()) + 1, np.int32)
        label_of[nearest[seeds]] = core_labels[seeds]
        owner = label_of[nearest]
        parts = [((owner == j) & (comp == 1)).astype(np.uint8) for j in keep]
        parts = [p for p in parts if int(p.sum()) >= MIN_AREA_PX]
        if parts:
            blobs = []
            for part in parts:
                x0, y0, bw, bh = cv2.boundingRect(part)
                m = cv2.moments(part, binaryImage=True)
                blobs.append(Blob(m["m10"] / m["m00"] + ox, m["m01"] / m["m00"] + oy, x0 + ox, y0 + oy,
                                  x0 + bw + ox, y0 + bh + oy, int(m["m00"]), ambiguous=_too_thick(part, bw, bh)))
            return blobs
    if _too_thick(comp, whole.x1 - whole.x0, whole.y1 - whole.y0):
        return [dataclasses.replace(whole, ambiguous=True)]
    return [whole]


def _too_thick(part: np.ndarray, w: int, h: int) -> bool:
    """Whether a circle wider than one item fits inside the part (two items touching along their length)."""
    if min(w, h) <= 2 * MAX_ITEM_RADIUS_PX:  # no circle that wide fits in the box: skip the transform
        return False
    pd = cv2.distanceTransform(cv2.copyMakeBorder(part, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0), cv2.DIST_L2, 5)
    return float(pd.max()) > MAX_ITEM_RADIUS_PX


def _crop_small(small: np.ndarray, blob: Blob) -> np.ndarray:
    cw, ch = CROP_WINDOW_MM[0] // SCALE, CROP_WINDOW_MM[1] // SCALE  # window width along x, height along y
    x0 = round((blob.cx - (SCALE - 1) / 2) / SCALE - cw / 2)
    y0 = round((blob.cy - (SCALE - 1) / 2) / SCALE - ch / 2)
    h, w = small.shape[:2]
    # pad with the border colour when the window runs off the frame (items near the belt's edge)
    px0, py0, px1, py1 = max(0, -x0), max(0, -y0), max(0, x0 + cw - w), max(0, y0 + ch - h)
    src = small[max(0, y0) : min(h, y0 + ch), max(0, x0) : min(w, x0 + cw)]
    if px0 or py0 or px1 or py1:
        src = cv2.copyMakeBorder(src, py0, py1, px0, px1, cv2.BORDER_REPLICATE)
    return cv2.rotate(src, cv2.ROTATE_90_CLOCKWISE)  # (cw x ch) -> long axis horizontal, CROP_HW
