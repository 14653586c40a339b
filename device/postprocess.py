"""Model outputs to results, per task (pure numpy + OpenCV, run for every frame on any machine).

- classify: softmax and top-k.
- detect: decode to boxes in model-input pixels, class-wise NMS, boxes mapped back to frame pixels.
  Output meanings: `fastestdet_grid` (FastestDet's (N, 85, H, W) head: channel 0 objectness (sigmoid
  already applied in the graph), 1-4 box offsets, 5.. class probabilities (softmax applied);
  score = obj^0.6 * cls^0.4, cx = (col + tanh(t1)) / W, cy = (row + tanh(t2)) / H, w = sigmoid(t3),
  h = sigmoid(t4), all relative to the input size) and `boxes_scores_classes` ((N, M, 6): x1, y1, x2, y2
  in input pixels, score, class index).
- segment: argmax mask mapped back to frame pixels, per-class area, a colour overlay.

Thresholds come from `manifest.postprocess` (`score_threshold`, `iou_threshold`, `max_detections`) unless the
caller overrides them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from device.bundle import Manifest
from device.preprocess import ImageTransform

DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_IOU_THRESHOLD = 0.45
DEFAULT_MAX_DETECTIONS = 100
VOID = 255  # mask value for frame pixels the model did not see (outside a centre crop)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)  # shift for stability: exp of large logits overflows
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # tanh form: no overflow warning for large negative x


# classify -------------------------------------------------------------------------------------------------
def classify(logits: np.ndarray, k: int = 5, *, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) logits -> (probs (N, K), top (N, k) class indexes, most likely first).

    `probabilities=True` when the model already ends in a softmax (manifest output meaning "probabilities").
    """
    x = np.asarray(logits, np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"classify expects (N, classes) logits, got shape {x.shape}")
    probs = x if probabilities else softmax(x)
    k = min(k, x.shape[1])
    # a stable sort breaks exact ties (common with quantized logits) towards the lowest index, as argmax does
    return probs, np.argsort(-probs, axis=1, kind="stable")[:, :k]


@dataclass(frozen=True, slots=True)
class Classification:
    label: str
    index: int
    confidence: float
    top: tuple[tuple[str, float], ...]


# detect ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    index: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels


def decode_fastestdet(grid: np.ndarray, input_wh: tuple[int, int], score_threshold: float) -> np.ndarray:
    """One image's FastestDet head (85, H, W) -> (K, 6) [x1, y1, x2, y2, score, class] in input pixels."""
    _, gh, gw = grid.shape
    obj = grid[0]
    cls_prob = grid[5:]
    cls = cls_prob.argmax(0)
    cls_score = np.take_along_axis(cls_prob, cls[None], 0)[0]
    score = np.power(np.clip(obj, 0, None), 0.6) * np.power(np.clip(cls_score, 0, None), 0.4)
    rows, cols = np.nonzero(score > score_threshold)
    if rows.size == 0:
        return np.zeros((0, 6), np.float32)
    t = grid[1:5, rows, cols]
    iw, ih = input_wh
    cx = (cols + np.tanh(t[0])) / gw * iw
    cy = (rows + np.tanh(t[1])) / gh * ih
    w = sigmoid(t[2]) * iw
    h = sigmoid(t[3]) * ih
    return np.stack(
        [
            cx - w / 2,
            cy - h / 2,
            cx + w / 2,
            cy + h / 2,
            score[rows, cols],
            cls[rows, cols].astype(np.float32),
        ],
        1,
    ).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indexes of the kept boxes, best first.

    Hand-written in numpy because device/ may not import torchvision; the tests check it against OpenCV's.
    """
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Class-wise NMS: boxes of different classes never suppress each other (offset per class, one pass)."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    offset = classes.astype(np.float32)[:, None] * (float(boxes.max()) + 1.0)
    return nms(boxes + offset, scores, iou_threshold)


def detect(
    dets: np.ndarray,
    transform: ImageTransform,
    labels: Sequence[str],
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> list[Detection]:
    """(K, 6) candidates in input pixels -> detections in frame pixels, thresholded, class-wise NMS."""
    dets = dets[dets[:, 4] > score_threshold]
    keep = batched_nms(dets[:, :4], dets[:, 4], dets[:, 5], iou_threshold)[:max_detections]
    kept = dets[keep]
    boxes = transform.to_frame(kept[:, :4])
    out = []
    for b, d in zip(boxes, kept, strict=True):
        idx = int(d[5])
        label = labels[idx] if 0 <= idx < len(labels) else str(idx)
        out.append(Detection(label, idx, float(d[4]), (float(b[0]), float(b[1]), float(b[2]), float(b[3]))))
    return out


# segment --------------------------------------------------------------------------------------------------
def palette(n: int) -> np.ndarray:
    """A fixed BGR colour per class (the PASCAL VOC bit-interleaved palette, so colours are stable)."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (b, g, r)
    return out


@dataclass(frozen=True)
class Segmentation:
    mask: np.ndarray  # HxW uint8 class index in frame pixels; VOID where the model saw nothing
    labels: tuple[str, ...]
    areas: dict[str, float]  # fraction of the frame per class

    def overlay(self, image: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The frame with each class painted in its colour (VOID left as is)."""
        colours = np.zeros((256, 3), np.uint8)
        colours[: len(self.labels)] = palette(len(self.labels))
        painted = colours[self.mask]
        out = cv2.addWeighted(image, 1 - alpha, painted, alpha, 0)
        void = self.mask == VOID
        out[void] = image[void]
        return out


def segment(mask_logits: np.ndarray, transform: ImageTransform, labels: Sequence[str]) -> Segmentation:
    """One image's (C, h, w) class scores -> a Segmentation at frame resolution."""
    c = mask_logits.shape[0]
    if c > VOID:
        raise ValueError(f"segmentation with {c} classes does not fit a uint8 mask")
    small = mask_logits.argmax(0).astype(np.uint8)
    h, w = small.shape
    # Each frame pixel takes the class of the model pixel its centre falls in (frame -> model is
    # x * scale + pad); pixels that fall outside the model's view (a centre crop's edges) are VOID.
    # Index arithmetic rather than cv2.warpAffine, whose nearest rounding is off by one at half pixels.
    ys = np.floor((np.arange(transform.frame_h) + 0.5) * transform.scale_y + transform.pad_y).astype(np.int64)
    xs = np.floor((np.arange(transform.frame_w) + 0.5) * transform.scale_x + transform.pad_x).astype(np.int64)
    y_ok, x_ok = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
    mask = small[np.clip(ys, 0, h - 1)[:, None], np.clip(xs, 0, w - 1)[None, :]]
    mask[~(y_ok[:, None] & x_ok[None, :])] = VOID
    counts = np.bincount(mask.ravel(), minlength=256)
    total = float(mask.size)
    names = tuple(labels) if len(labels) == c else tuple(str(i) for i in range(c))
    return Segmentation(mask, names, {names[i]: counts[i] / total for i in range(c)})


# dispatch by manifest -------------------------------------------------------------------------------------
class Postprocessor:
    """Turns a batch's outputs into one result per image, as the manifest's task and output meaning say."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        top_k: int = 5,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> None:
        self.manifest = manifest
        self.labels = manifest.labels
        self.top_k = top_k
        pp = manifest.postprocess
        self.score_threshold = float(
            score_threshold
            if score_threshold is not None
            else pp.get("score_threshold", DEFAULT_SCORE_THRESHOLD)
        )
        self.iou_threshold = float(
            iou_threshold if iou_threshold is not None else pp.get("iou_threshold", DEFAULT_IOU_THRESHOLD)
        )
        self.max_detections = int(pp.get("max_detections", DEFAULT_MAX_DETECTIONS))
        wanted = {
            "classify": ("logits", "probabilities"),
            "detect": ("fastestdet_grid", "boxes_scores_classes"),
            "segment": ("mask_logits",),
        }[manifest.task]
        out = next((o for o in manifest.outputs if o.meaning in wanted), None)
        if out is None:
            raise ValueError(f"a {manifest.task} bundle needs an output with meaning {' or '.join(wanted)}")
        self.output = out
        self.input_wh = (manifest.input.width, manifest.input.height)

    def __call__(self, outputs: dict[str, np.ndarray], transforms: Sequence[ImageTransform]) -> list[Any]:
        if self.output.name not in outputs:
            raise KeyError(f"the backend returned no output '{self.output.name}' (got {sorted(outputs)})")
        y = outputs[self.output.name]
        task = self.manifest.task
        if task == "classify":
            probs, top = classify(y, self.top_k, probabilities=self.output.meaning == "probabilities")
            return [self._classification(p, t) for p, t in zip(probs, top, strict=True)]
        if task == "detect":
            res = []
            for i, tf in enumerate(transforms):
                cand = (
                    decode_fastestdet(y[i], self.input_wh, self.score_threshold)
                    if self.output.meaning == "fastestdet_grid"
                    else np.asarray(y[i], np.float32).reshape(-1, 6)
                )
                res.append(
                    detect(
                        cand,
                        tf,
                        self.labels,
                        score_threshold=self.score_threshold,
                        iou_threshold=self.iou_threshold,
                        max_detections=self.max_detections,
                    )
                )
            return res
        return [segment(y[i], tf, self.labels) for i, tf in enumerate(transforms)]

    def _classification(self, probs: np.ndarray, top: np.ndarray) -> Classification:
        names = self.labels
        lab = [names[i] if i < len(names) else str(i) for i in top]
        return Classification(
            lab[0],
            int(top[0]),
            float(probs[top[0]]),
            tuple((n, float(probs[i])) for n, i in zip(lab, top, strict=True)),
        )


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of the frame with each detection's box and label (bring-up, docs, `check model --image`)."""
    out = image.copy()
    colours = palette(max(2, max((d.index for d in detections), default=0) + 2))
    thick = max(1, round(min(image.shape[:2]) / 250))
    for d in detections:
        x1, y1, x2, y2 = (round(v) for v in d.box)
        c = tuple(int(v) for v in colours[d.index + 1])
        cv2.rectangle(out, (x1, y1), (x2, y2), c, thick)
        text = f"{d.label} {d.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, thick)
        y = max(y1, th + base)
        cv2.rectangle(out, (x1, y - th - base), (x1 + tw, y), c, -1)
        cv2.putText(out, text, (x1, y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (255, 255, 255), thick)
    return out
