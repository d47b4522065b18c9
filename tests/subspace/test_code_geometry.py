import numpy as np
import pytest

from deltaspace.subspace.code_geometry import code_geometry

SOURCES = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_a_mixture_of_the_source_codes_lies_inside_their_region():
    place = code_geometry([0.3, 0.5, 0.0], SOURCES)
    assert place.outside_span == pytest.approx(0.0)
    assert place.weight_sum == pytest.approx(0.8) and place.negative_weight == pytest.approx(0.0)
    assert place.norm == pytest.approx(np.hypot(0.3, 0.5))


def test_an_extrapolation_and_a_direction_outside_the_span_are_measured():
    place = code_geometry([2.0, -1.0, 0.0], SOURCES)
    assert place.weight_sum == pytest.approx(1.0) and place.negative_weight == pytest.approx(1.0)
    outside = code_geometry([0.0, 0.0, 2.0], SOURCES)
    assert outside.outside_span == pytest.approx(1.0)
    half = code_geometry([1.0, 0.0, 1.0], SOURCES)
    assert half.outside_span == pytest.approx(1 / np.sqrt(2))


def test_codes_of_the_wrong_size_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"\(k, 2\) array"):
        code_geometry([1.0, 2.0], SOURCES)
    assert code_geometry([0.0, 0.0, 0.0], SOURCES).outside_span == 0.0
