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
