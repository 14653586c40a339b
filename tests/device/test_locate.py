from dataclasses import replace

import numpy as np
import pytest

from device.grades import GRADES, sample_shape
from device.sim.render import BeltBackground, Placement, draw_cucumber, footprint_x
from device.sorting.locate import CROP_HW, find_items, locate


def belt_of(rng, gaps, gain=1.0):
    """A frame with items side by side; gaps in mm between footprints (0 = touching)."""
    bg = BeltBackground(480, 320, 0, 4.0)
    img = bg.frame(gain)
    xs, x, front_prev = [], -170.0, 0.0
    for k in range(len(gaps) + 1):
        shape = sample_shape(str(rng.choice(GRADES)), rng)
        p = Placement(0, 160 + rng.normal(0, 10), rng.uniform(-6, 6), int(rng.choice([-1, 1])),
                      int(rng.integers(1 << 30)))
        back, front = footprint_x(shape, p)
        if k:
            x += front_prev + back + gaps[k - 1]
        front_prev = front
        xs.append(x)
        draw_cucumber(img, shape, replace(p, x_mm=x), 0, gain)
    return bg.add_noise(img, 1), xs


@pytest.mark.parametrize("gain", [0.8, 1.0, 1.2])
def test_touching_items_are_found_one_blob_each(gain):
    rng = np.random.default_rng(7)
    for _ in range(10):
        img, xs = belt_of(rng, [0.0, 1.0, 0.0], gain)
        complete, partial = find_items(img)
        assert len(complete) + len(partial) == 4
        for b in complete:
            assert min(abs(b.cx - 240 - x) for x in xs) < 12


def test_crop_is_fixed_scale_and_padded_at_the_frame_edge():
    rng = np.random.default_rng(3)
    img, _ = belt_of(rng, [60.0])
    view = locate(img)
    crop = view.crop(view.complete[0])
    assert crop.shape == (*CROP_HW, 3)
    edge = replace(view.complete[0], cx=2.0, cy=2.0)
    assert view.crop(edge).shape == (*CROP_HW, 3)


def test_belts_with_random_gaps_count_every_item():
    # the seam between touching items is a pixel or two wide: the locator finds cores at full resolution so that
    # its half-resolution copy does not bridge them (a fully half-resolution locator miscounted belts like these)
    rng = np.random.default_rng(23)
    wrong = []
    for gain in (0.7, 1.0, 1.3):
        for _ in range(20):
            gaps = list(rng.choice([0.0, 1.0, 2.0, 5.0, 10.0, 40.0], size=int(rng.integers(0, 4))))
            img, _xs = belt_of(rng, gaps, gain)
            complete, partial = find_items(img)
            if len(complete) + len(partial) != len(gaps) + 1:
                wrong.append((gain, gaps, len(complete) + len(partial)))
    assert not wrong
