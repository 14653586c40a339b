"""The frame that travels from a capture source through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Frame:
    """One captured image. `capture_ts` is host `time.monotonic()` at exposure (or its best estimate)."""

    image: np.ndarray  # HxWx3 uint8, BGR (OpenCV's order)
    capture_ts: float
    seq: int  # per-source frame counter; a gap means the source dropped frames
    source: str = ""  # camera name from the config
    view: int = 0  # view index when several cameras look at the same item (CUCUMBER-9 prototype 2: 3 views)
    meta: dict[str, object] = field(default_factory=dict)  # source-specific extras (the twin adds its truth)
