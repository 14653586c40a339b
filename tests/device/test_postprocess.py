import numpy as np
import pytest

from device.postprocess import classify, softmax


def test_softmax_is_stable_and_sums_to_one():
    p = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]], atol=1e-12)


def test_classify_top_k_is_sorted_best_first():
    logits = np.random.default_rng(0).normal(size=(5, 9)).astype(np.float32)
    probs, top = classify(logits, k=3)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(top, np.argsort(-logits, 1)[:, :3])
    probs2, top2 = classify(probs, k=20, probabilities=True)
    assert probs2 is not None and top2.shape == (5, 9)
    with pytest.raises(ValueError, match="expects"):
        classify(np.zeros((1, 2, 3)))


# detect ---------------------------------------------------------------------------------------------------
import cv2  # noqa: E402

from device.bundle import InputSpec, Manifest, OutputSpec  # noqa: E402
from device.postprocess import (  # noqa: E402
    VOID,
    Detection,
    Postprocessor,
    batched_nms,
    decode_fastestdet,
    detect,
    draw_detections,
    nms,
    segment,
)
from device.preprocess import ImageTransform, Preprocessor  # noqa: E402

IDENTITY = ImageTransform(1.0, 1.0, 0.0, 0.0, 1000, 1000)


def test_nms_keeps_the_same_boxes_as_opencv():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(10, 60, (300, 2))
    boxes = np.hstack([xy, xy + wh]).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    ours = nms(boxes, scores, 0.45)
    theirs = cv2.dnn.NMSBoxes(np.hstack([xy, wh]).tolist(), scores.tolist(), 0.0, 0.45)
    assert sorted(ours.tolist()) == sorted(np.asarray(theirs).ravel().tolist())
    assert scores[ours[0]] == scores.max()


def test_nms_is_class_wise():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    keep = batched_nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 2]


def test_fastestdet_grid_decodes_one_cell_by_the_upstream_formula():
    grid = np.zeros((85, 22, 22), np.float32)
    r, c = 5, 10
    grid[0, r, c] = 0.81  # objectness
    grid[1:5, r, c] = [0.5, -0.5, 0.0, 1.0]  # tanh offsets, sigmoid sizes
    grid[5 + 46, r, c] = 0.9  # class 46 = banana
    dets = decode_fastestdet(grid, (352, 352), 0.5)
    assert dets.shape == (1, 6)
    cx, cy = (c + np.tanh(0.5)) / 22 * 352, (r + np.tanh(-0.5)) / 22 * 352
    w, h = 0.5 * 352, 1 / (1 + np.exp(-1.0)) * 352
    np.testing.assert_allclose(dets[0, :4], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5)
    assert dets[0, 4] == pytest.approx(0.81**0.6 * 0.9**0.4) and dets[0, 5] == 46


def test_detections_come_back_in_frame_pixels_through_a_letterbox():
    spec = InputSpec(name="i", shape=(1, 3, 100, 100), resize="letterbox")
    _, (tf,) = Preprocessor(spec).prepare([np.zeros((200, 400, 3), np.uint8)])  # scale 0.25, pad_y 25
    cand = np.array([[10, 35, 50, 75, 0.9, 1]], np.float32)
    (d,) = detect(cand, tf, ("a", "b"), score_threshold=0.5)
    assert d.label == "b" and d.box == pytest.approx((40, 40, 200, 200))


def test_fastestdet_finds_fruit_on_real_photos(data_root, tmp_path):
    from runtime_fixtures import fastestdet_bundle

    from device.backends import create_backend
    from device.frames import Frame
    from device.pipeline import WholeFrameTask

    b = fastestdet_bundle(data_root, tmp_path / "fd")
    be = create_backend(b, "onnxruntime", threads=1, warmup=0)
    task = WholeFrameTask(b)
    fruit = data_root / "grocery_store" / "val" / "Fruit"
    for photo, label in (
        (fruit / "Orange" / "Orange_002.jpg", "orange"),
        (fruit / "Banana" / "Banana_005.jpg", "banana"),
    ):
        img = cv2.imread(str(photo))
        assert img is not None, photo
        frame = Frame(img, 0.0, 0)
        batch, ctx = task.prepare(frame)
        dets = task.finish(frame, be.infer(batch), ctx)
        assert len(dets) >= 3 and dets[0].label == label
        assert all(isinstance(d, Detection) and d.score >= 0.65 for d in dets)
        h, w = img.shape[:2]
        assert all(0 <= d.box[0] < d.box[2] <= w and 0 <= d.box[1] < d.box[3] <= h for d in dets)
        drawn = draw_detections(img, dets)
        assert drawn.shape == img.shape and not np.array_equal(drawn, img)


def test_boxes_scores_classes_output_via_the_manifest():
    m = Manifest(
        name="d",
        version="1",
        task="detect",
        labels=("cuke", "stone"),
        input=InputSpec(name="images", shape=("batch", 3, 64, 64)),
        outputs=(OutputSpec(name="detections", shape=("batch", 10, 6), meaning="boxes_scores_classes"),),
        postprocess={"score_threshold": 0.5, "iou_threshold": 0.5},
    )
    y = np.zeros((2, 10, 6), np.float32)
    y[0, 0] = [0, 0, 32, 32, 0.9, 1]
    y[0, 1] = [1, 1, 32, 32, 0.8, 1]  # suppressed by the first
    y[1, 0] = [0, 0, 10, 10, 0.4, 0]  # below the threshold
    tf = ImageTransform(0.5, 0.5, 0, 0, 128, 128)
    res = Postprocessor(m)({"detections": y}, [tf, tf])
    assert [len(r) for r in res] == [1, 0] and res[0][0].label == "stone"
    assert res[0][0].box == pytest.approx((0, 0, 64, 64))


# segment --------------------------------------------------------------------------------------------------
def two_halves(h=8, w=8, c=3) -> np.ndarray:
    logits = np.zeros((c, h, w), np.float32)
    logits[1, :, : w // 2] = 5
    logits[2, :, w // 2 :] = 5
    return logits


def test_segment_maps_the_mask_back_to_the_frame_and_measures_areas():
    spec = InputSpec(name="i", shape=(1, 3, 8, 8))
    _, (tf,) = Preprocessor(spec).prepare([np.zeros((16, 32, 3), np.uint8)])
    seg = segment(two_halves(), tf, ("void", "road", "sky"))
    assert seg.mask.shape == (16, 32)
    assert (seg.mask[:, :16] == 1).all() and (seg.mask[:, 16:] == 2).all()
    assert seg.areas == pytest.approx({"void": 0.0, "road": 0.5, "sky": 0.5})
    img = np.full((16, 32, 3), 100, np.uint8)
    over = seg.overlay(img)
    assert over.shape == img.shape and not np.array_equal(over[0, 0], over[0, 31])


def test_segment_through_a_centre_crop_marks_unseen_pixels_void():
    spec = InputSpec(name="i", shape=(1, 3, 8, 8), resize="center_crop")
    _, (tf,) = Preprocessor(spec).prepare([np.zeros((16, 32, 3), np.uint8)])  # sees the middle 16 columns
    seg = segment(two_halves(), tf, ("void", "road", "sky"))
    assert (seg.mask[:, :8] == VOID).all() and (seg.mask[:, 24:] == VOID).all()
    assert (seg.mask[:, 8:16] == 1).all() and (seg.mask[:, 16:24] == 2).all()
    assert seg.areas["road"] == pytest.approx(0.25)
    img = np.full((16, 32, 3), 100, np.uint8)
    assert np.array_equal(seg.overlay(img)[:, :8], img[:, :8])
