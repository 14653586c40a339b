"""Frames (BGR uint8) to the model's input batch (NCHW float32), as the bundle's manifest says.

Resize policy, colour order, scale, mean and std come from `manifest.input`; nothing is a flag. The work is
one OpenCV resize and one multiply-add per channel into a preallocated batch buffer, so a frame costs no
allocation beyond OpenCV's own. Buffers rotate in a small ring, because the pipeline may hold a prepared
batch in its queue while the next one is being written.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.bundle import InputSpec

LETTERBOX_FILL = 114  # grey padding, the value YOLO-family detectors were trained with


@dataclass(frozen=True, slots=True)
class ImageTransform:
    """How one frame was mapped into the input: model pixel = frame pixel * scale + pad, before any crop."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    frame_w: int
    frame_h: int

    def to_frame(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes (N, 4) in model-input pixels back to frame pixels, clipped to the frame."""
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = (xyxy[:, 0::2] - self.pad_x) / self.scale_x  # x1, x2
        out[:, 1::2] = (xyxy[:, 1::2] - self.pad_y) / self.scale_y  # y1, y2
        np.clip(out[:, 0::2], 0, self.frame_w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_h, out=out[:, 1::2])
        return out


class Preprocessor:
    """Callable: a list of BGR uint8 images -> an NCHW float32 batch (a view into a reused buffer).

    The returned batch stays valid for `ring - 1` further calls.
    """

    def __init__(self, spec: InputSpec, max_batch: int = 1, *, ring: int = 4) -> None:
        if spec.color_order == "GRAY" and spec.channels != 1:
            raise ValueError(
                f"input '{spec.name}': colour order GRAY needs 1 channel, the shape has {spec.channels}"
            )
        if spec.color_order != "GRAY" and spec.channels != 3:
            raise ValueError(f"input '{spec.name}': colour order {spec.color_order} needs 3 channels")
        c = spec.channels
        if len(spec.mean) != c or len(spec.std) != c:
            raise ValueError(f"input '{spec.name}': mean and std need {c} values each")
        self.spec = spec
        self.max_batch = max_batch
        self.size = (spec.width, spec.height)  # OpenCV order
        # out = (pixel * scale - mean) / std  ==  pixel * a + b
        self._a = np.array([spec.scale / s for s in spec.std], np.float32)
        self._b = np.array([-m / s for m, s in zip(spec.mean, spec.std, strict=True)], np.float32)
        self._ring = [np.empty((max_batch, c, spec.height, spec.width), np.float32) for _ in range(ring)]
        self._next = 0
        self._canvas = np.full((spec.height, spec.width, 3), LETTERBOX_FILL, np.uint8)
        w, h = spec.width, spec.height
        self._identity = ImageTransform(1.0, 1.0, 0.0, 0.0, w, h)  # an input-sized image, not resized

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        return self.prepare(images)[0]

    def prepare(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[ImageTransform]]:
        """The batch and, per image, the transform that maps model pixels back to frame pixels."""
        n = len(images)
        if not 0 < n <= self.max_batch:
            raise ValueError(f"a batch of {n} images; this preprocessor takes 1 to {self.max_batch}")
        buf = self._ring[self._next]
        self._next = (self._next + 1) % len(self._ring)
        if n > 1 and self._all_input_sized(images):
            return self._normalise_stack(np.stack(images), buf[:n]), [self._identity] * n
        transforms = [self._one(img, buf[i]) for i, img in enumerate(images)]
        return buf[:n], transforms

    def _all_input_sized(self, images: list[np.ndarray]) -> bool:
        """Every image already a BGR uint8 image of the input's size (the sorter's crops): no resize to do."""
        shape = (self.spec.height, self.spec.width, 3)
        return self.spec.color_order != "GRAY" and all(i.dtype == np.uint8 and i.shape == shape for i in images)

    def _normalise_stack(self, stack: np.ndarray, out: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) BGR uint8 -> out (N, C, H, W): one multiply-add per channel for the whole batch, the
        same arithmetic as `_one` (a crop at a time cost about 80 us each in numpy call overhead)."""
        order = (2, 1, 0) if self.spec.color_order == "RGB" else (0, 1, 2)
        for c, src in enumerate(order):
            np.multiply(stack[:, :, :, src], self._a[c], out=out[:, c], casting="unsafe")
            out[:, c] += self._b[c]
        return out

    def _one(self, img: np.ndarray, out: np.ndarray) -> ImageTransform:
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
            raise ValueError(f"expected a BGR uint8 HxWx3 image, got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        if h == 0 or w == 0:
            raise ValueError("empty image")
        resized, tf = self._resize(img, w, h)
        spec = self.spec
        if spec.color_order == "GRAY":
            gray = resized if resized.ndim == 2 else cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)
            np.multiply(gray, self._a[0], out=out[0], casting="unsafe")
            out[0] += self._b[0]
            return tf
        if resized.ndim == 2:
            resized = cv2.cvtColor(resized, cv2.COLOR_GRAY2BGR)
        order = (2, 1, 0) if spec.color_order == "RGB" else (0, 1, 2)
        for c, src in enumerate(order):
            np.multiply(resized[:, :, src], self._a[c], out=out[c], casting="unsafe")
            out[c] += self._b[c]
        return tf

    def _resize(self, img: np.ndarray, w: int, h: int) -> tuple[np.ndarray, ImageTransform]:
        tw, th = self.size
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        policy = self.spec.resize
        if policy == "stretch":
            return resize_stretch(img, (tw, th)), ImageTransform(tw / w, th / h, 0, 0, w, h)
        if policy == "letterbox":
            s = min(tw / w, th / h)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            px, py = (tw - nw) // 2, (th - nh) // 2
            canvas = self._canvas if img.ndim == 3 else np.full((th, tw), LETTERBOX_FILL, np.uint8)
            canvas[...] = LETTERBOX_FILL
            canvas[py : py + nh, px : px + nw] = cv2.resize(img, (nw, nh), interpolation=_interp(s * s))
            return canvas, ImageTransform(nw / w, nh / h, px, py, w, h)
        # center_crop: scale so the image covers the input, then cut the centre (no distortion, edges lost)
        s = max(tw / w, th / h)
        nw, nh = max(tw, round(w * s)), max(th, round(h * s))
        x0, y0 = (nw - tw) // 2, (nh - th) // 2
        big = cv2.resize(img, (nw, nh), interpolation=_interp(s * s))
        return big[y0 : y0 + th, x0 : x0 + tw], ImageTransform(nw / w, nh / h, -x0, -y0, w, h)


def resize_stretch(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The device's resize to (width, height), aspect ratio not kept. Training's evaluation transform calls this
    same function (`training.presets.DeviceResize`), so a model is measured on the pixels the device will feed it.
    Any channel count (HxW, HxWxC); the result keeps the input's layout.

    A shrink is done by area averaging. While the image is at least twice the target both ways it is first
    halved exactly: OpenCV's exact-2x area path is about ten times faster than its general one (a 480x320 frame
    to 144x48 went from 0.54 to 0.25 ms), and the result differs from a one-step area resize by about one grey
    level (tests/device/test_preprocess.py). Then, while it is still at least twice the target's height, pairs
    of rows are averaged (a wide frame into a short input, as the demo's 3:1 one): OpenCV has no fast path for
    a one-axis halving (its INTER_AREA took 0.28 ms on 240x160, `addWeighted` on the two row views 0.02 ms,
    with the same result), and the general area step after it has half the rows to read (0.22 to 0.15 ms)."""
    h, w = img.shape[:2]
    tw, th = size_wh
    keep_channel_axis = img.ndim == 3
    while w >= 2 * tw and h >= 2 * th and w % 2 == 0 and h % 2 == 0:
        w, h = w // 2, h // 2
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    while h >= 2 * th and h % 2 == 0:
        h //= 2
        img = cv2.addWeighted(img[0::2], 0.5, img[1::2], 0.5, 0.0)  # row views: no copy, rounded like area
    out = cv2.resize(img, (tw, th), interpolation=_interp((tw / w) * (th / h)))
    return out[:, :, None] if keep_channel_axis and out.ndim == 2 else out


def _interp(area_ratio: float) -> int:
    """INTER_AREA when shrinking (no aliasing), INTER_LINEAR when enlarging (INTER_AREA is slow there)."""
    return cv2.INTER_AREA if area_ratio < 1 else cv2.INTER_LINEAR
