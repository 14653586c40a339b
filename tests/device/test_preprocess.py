import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.bundle import InputSpec
from device.preprocess import LETTERBOX_FILL, Preprocessor, resize_stretch


def spec(**kw) -> InputSpec:
    base = dict(
        name="images",
        shape=("batch", 3, 24, 32),
        color_order="RGB",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    base.update(kw)
    return InputSpec(**base)


def frame(h=60, w=80, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def test_stretch_rgb_normalisation_matches_the_textbook_formula():
    s = spec()
    img = frame()
    out = Preprocessor(s)([img])
    ref = resize_stretch(img, (32, 24))[:, :, ::-1].astype(np.float64) / 255
    ref = ((ref - np.array(s.mean)) / np.array(s.std)).transpose(2, 0, 1)
    assert out.shape == (1, 3, 24, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], ref, atol=1e-5)


def test_stretch_halves_exactly_first_and_stays_within_a_grey_level_of_one_area_resize():
    # a twin frame: real edges and texture, the case the shortcut exists for (480x320 -> 144x48)
    from device.grades import sample_shape
    from device.sim.render import BeltBackground, Placement, draw_cucumber

    rng = np.random.default_rng(5)
    img = BeltBackground(480, 320, 0, 4.0).frame(1.0)
    for x in (-120.0, 0.0, 130.0):
        draw_cucumber(img, sample_shape("M", rng), Placement(x, 160, 0.0, 1, 3), 0, 1.0)
    fast = resize_stretch(img, (144, 48)).astype(int)
    one_step = cv2.resize(img, (144, 48), interpolation=cv2.INTER_AREA).astype(int)
    diff = np.abs(fast - one_step)
    assert fast.shape == (48, 144, 3)
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 5
    # a tall shrink with the width already small enough: pairs of rows are averaged first, as area would
    tall = frame(160, 30)
    rows = resize_stretch(tall, (30, 40)).astype(int)
    one_step = cv2.resize(tall, (30, 40), interpolation=cv2.INTER_AREA).astype(int)
    assert rows.shape == (40, 30, 3) and np.abs(rows - one_step).max() <= 1
    gray = resize_stretch(tall[:, :, :1], (30, 40))
    assert gray.shape == (40, 30, 1)
    # sizes that cannot be halved exactly, and enlargements, take the one-step path unchanged
    odd = frame(61, 81)
    one_step = cv2.resize(odd, (32, 24), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(resize_stretch(odd, (32, 24)), one_step)
    small = frame(20, 30)
    np.testing.assert_array_equal(resize_stretch(small, (60, 40)), cv2.resize(small, (60, 40)))


def test_bgr_keeps_channel_order_and_gray_makes_one_channel():
    img = frame()
    bgr = Preprocessor(spec(color_order="BGR", mean=(0, 0, 0), std=(1, 1, 1)))([img])[0]
    small = resize_stretch(img, (32, 24))
    np.testing.assert_allclose(bgr[0], small[:, :, 0] / 255, atol=1e-6)
    gray = Preprocessor(spec(shape=(1, 1, 24, 32), color_order="GRAY", mean=(0.5,), std=(0.5,)))([img])[0]
    ref = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) / 255
    np.testing.assert_allclose(gray[0], (ref - 0.5) / 0.5, atol=1e-5)


def test_a_batch_of_different_sizes_and_a_ring_of_buffers():
    pre = Preprocessor(spec(), max_batch=3, ring=2)
    a = pre([frame(60, 80), frame(20, 200, 1), frame(100, 40, 2)])
    assert a.shape == (3, 3, 24, 32)
    kept = a.copy()
    b = pre([frame(seed=5)])
    assert b.shape == (1, 3, 24, 32)
    np.testing.assert_array_equal(a, kept)  # the second call wrote the other buffer of the ring
    pre([frame(seed=6)])
    assert not np.array_equal(a[0], kept[0])  # ring of 2: the third call reuses the first buffer


@pytest.mark.parametrize("policy", ["stretch", "letterbox", "center_crop"])
@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_a_batch_of_input_sized_crops_is_normalised_at_once_and_equals_one_at_a_time(policy, order):
    s = spec(resize=policy, color_order=order)
    crops = [frame(24, 32, seed) for seed in range(5)]
    batched, transforms = Preprocessor(s, max_batch=5).prepare(crops)
    one = Preprocessor(s, max_batch=1)
    for i, crop in enumerate(crops):
        single, (tf,) = one.prepare([crop])
        np.testing.assert_array_equal(batched[i], single[0])
        assert transforms[i] == tf
    # a batch with one image of another size takes the per-image path, with the same result for the rest
    mixed, _tfs = Preprocessor(s, max_batch=6).prepare([*crops, frame(60, 80)])
    np.testing.assert_array_equal(mixed[:5], batched)


def test_letterbox_pads_and_maps_boxes_back_to_frame_pixels():
    s = spec(
        shape=(1, 3, 32, 32), color_order="BGR", scale=1.0, mean=(0, 0, 0), std=(1, 1, 1), resize="letterbox"
    )
    img = np.full((40, 80, 3), 200, np.uint8)  # wide: pads top and bottom
    batch, (tf,) = Preprocessor(s).prepare([img])
    assert batch[0, :, 0, :].max() == LETTERBOX_FILL and batch[0, :, 16, :].min() == 200
    box = np.array([[0, tf.pad_y, 32, 32 - tf.pad_y]], np.float32)  # the whole image area in model pixels
    np.testing.assert_allclose(tf.to_frame(box), [[0, 0, 80, 40]], atol=0.5)


def test_center_crop_cuts_the_middle_without_distortion():
    s = spec(
        shape=(1, 3, 10, 10),
        color_order="BGR",
        scale=1.0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        resize="center_crop",
    )
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, 20:40] = 255  # a white middle third, as wide as the frame is high
    out = Preprocessor(s)([img])[0]
    assert out.min() > 250  # only the white middle survives the crop


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 4), np.uint8), "BGR"),
    ],
)
def test_bad_images_raise_a_clear_value_error(bad, why):
    with pytest.raises(ValueError, match=why):
        Preprocessor(spec())([bad])


def test_spec_inconsistencies_are_refused():
    with pytest.raises(ValueError, match="GRAY needs 1 channel"):
        Preprocessor(spec(color_order="GRAY"))
    with pytest.raises(ValueError, match="mean and std"):
        Preprocessor(spec(mean=(0.5,)))


@settings(max_examples=30, deadline=None)
@given(w=st.integers(8, 400), h=st.integers(8, 400), policy=st.sampled_from(["stretch", "letterbox"]))
def test_model_pixels_of_the_frame_corners_map_back_to_the_corners(w, h, policy):
    s = spec(resize=policy)
    _, (tf,) = Preprocessor(s).prepare([np.zeros((h, w, 3), np.uint8)])
    corners = np.array(
        [[tf.pad_x, tf.pad_y, tf.pad_x + w * tf.scale_x, tf.pad_y + h * tf.scale_y]], np.float32
    )
    np.testing.assert_allclose(tf.to_frame(corners), [[0, 0, w, h]], atol=1e-3 * max(w, h))
