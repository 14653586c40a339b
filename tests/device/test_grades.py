import numpy as np
import pytest

from device.grades import GRADES, CucumberShape, grade_of, sample_shape


@pytest.mark.parametrize("grade", GRADES)
def test_sampled_shapes_have_the_grade_they_were_sampled_for(grade):
    rng = np.random.default_rng(1)
    assert all(grade_of(sample_shape(grade, rng)) == grade for _ in range(500))


@pytest.mark.parametrize(
    ("length", "bend", "taper", "defects", "grade"),
    [
        (240, 2, 0.9, 0, "2L"), (230, 2, 0.9, 0, "2L"), (229.9, 2, 0.9, 0, "L"), (200, 10, 0.9, 0, "M"),
        (180, 5, 0.9, 0, "S"), (160, 0, 0.9, 0, "2S"), (220, 10.1, 0.9, 0, "BL"), (190, 20, 0.9, 0, "BM"),
        (179, 25, 0.9, 0, "BS"), (200, 30.5, 0.9, 0, "C"), (200, 2, 0.9, 1, "C"), (200, 2, 0.5, 0, "C"),
    ],
)
def test_rules_at_their_boundaries(length, bend, taper, defects, grade):
    assert grade_of(CucumberShape(length, 30, bend, taper, defects)) == grade


def test_out_of_range_length_is_refused():
    with pytest.raises(ValueError, match="outside the graded range"):
        grade_of(CucumberShape(120, 30, 0, 0.9, 0))


def test_unknown_grade_is_refused():
    with pytest.raises(ValueError, match="unknown grade"):
        sample_shape("XL", np.random.default_rng(0))
