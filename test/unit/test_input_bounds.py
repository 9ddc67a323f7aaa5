"""The node's own input bound (core/input_size.py) and which stamps a frame may carry."""

from __future__ import annotations

import pytest

from rgbd_seg_ros.core import input_size
from rgbd_seg_ros.core.image_header import MAX_PIXELS
from rgbd_seg_ros.core.input_size import fitted_size, max_input_pixels
from rgbd_seg_ros.core.stamps import stamp_problem


def test_automatic_bound_follows_the_model():
    assert max_input_pixels(0, (480, 640)) == 4 * 480 * 640
    assert max_input_pixels(0, (120, 160)) == 640 * 480  # never below VGA
    assert max_input_pixels(0, None) == 1920 * 1200  # runs at the camera's size
    assert max_input_pixels(0, (8000, 8000)) == MAX_PIXELS  # never above the package's bound


def test_an_explicit_bound_wins_but_not_over_the_package_bound():
    assert max_input_pixels(1000, (480, 640)) == 1000
    assert max_input_pixels(MAX_PIXELS * 2, None) == MAX_PIXELS


@pytest.mark.parametrize(
    ('size', 'bound'),
    [((3000, 4000), 1_228_800), ((2000, 2600), 307_200), ((1, 100_000), 50), ((7, 9), 1)],
)
def test_fitted_size_keeps_the_aspect_and_stays_within_the_bound(size, bound):
    height, width = size
    new_h, new_w = fitted_size(height, width, bound)
    assert new_h * new_w <= bound and new_h >= 1 and new_w >= 1
    assert new_h <= height and new_w <= width
    if min(new_h, new_w) > 10:
        assert abs(new_w / new_h - width / height) < 0.01 * width / height
        assert new_h * new_w > 0.99 * bound  # not scaled further than needed


def test_fitted_size_leaves_a_fitting_frame_alone():
    assert fitted_size(480, 640, 640 * 480) == (480, 640)
    with pytest.raises(ValueError):
        fitted_size(480, 640, 0)


def test_auto_constants_are_the_documented_ones():
    assert (input_size.AUTO_FACTOR, input_size.AUTO_FLOOR) == (4, 307_200)


@pytest.mark.parametrize(
    ('sec', 'nanosec', 'bad'),
    [
        (0, 0, False),  # zero is a missing stamp, counted separately by the node
        (1_700_000_000, 999_999_999, False),
        (-5, 0, True),
        (-1, 999_999_999, True),
        (3, 1_000_000_000, True),
        (3, 4_294_967_295, True),
    ],
)
def test_stamp_problem(sec, nanosec, bad):
    assert (stamp_problem(sec, nanosec) is not None) == bad
