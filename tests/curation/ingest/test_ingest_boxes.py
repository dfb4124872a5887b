import pytest

from curation.ingest.boxes import (
    MALFORMED_BOX,
    OUTSIDE_IMAGE,
    ZERO_AREA,
    BoxConvention,
    normalise_box,
    pixel_box,
)

W, H = 200, 100
# The same region, pixels x 20..79 and y 10..49 of a 200 x 100 image, in every convention.
SAME_REGION = [
    ("xywh-pixel", [20, 10, 60, 40]),
    ("xyxy-pixel", [20, 10, 80, 50]),
    ("xyxy-pixel-1", [21, 11, 80, 50]),
    ("xywh-normalised", [0.1, 0.1, 0.3, 0.4]),
    ("xyxy-normalised", [0.1, 0.1, 0.4, 0.5]),
    ("xxyy-normalised", [0.1, 0.4, 0.1, 0.5]),
]


@pytest.mark.parametrize(("spec", "values"), SAME_REGION)
def test_every_convention_maps_the_same_region_to_the_same_normalised_box(spec, values):
    box, reason = normalise_box(values, BoxConvention.parse(spec), W, H)
    assert reason is None
    assert box == pytest.approx([0.1, 0.1, 0.4, 0.5])
    assert pixel_box(box, W, H) == (20, 10, 80, 50)


def test_boxes_sticking_out_are_clipped_and_boxes_outside_or_flat_are_dropped_by_reason():
    xyxy = BoxConvention("xyxy", "pixel")
    assert normalise_box([-20, 50, 100, 140], xyxy, W, H) == ([0.0, 0.5, 0.5, 1.0], None)
    assert normalise_box([210, 10, 250, 50], xyxy, W, H) == (None, OUTSIDE_IMAGE)
    assert normalise_box([-30, -30, 0, 0], xyxy, W, H) == (None, OUTSIDE_IMAGE)
    assert normalise_box([50, 20, 50, 60], xyxy, W, H) == (None, ZERO_AREA)
    assert normalise_box([20, 10, 0, 0], BoxConvention("xywh", "pixel"), W, H) == (None, ZERO_AREA)


@pytest.mark.parametrize(
    "values", [None, [1, 2, 3], ["a", 0, 1, 1], [0, 0, float("nan"), 1], [30, 0, 10, 5]]
)
def test_malformed_boxes_are_reported_not_raised(values):
    assert normalise_box(values, BoxConvention("xyxy", "pixel"), W, H) == (None, MALFORMED_BOX)


@pytest.mark.parametrize(
    "spec", ["xyxy", "xywh-inches", "cxcywh-pixel", "xyxy-normalised-1", "xyxy-pixel-2"]
)
def test_unknown_conventions_fail_fast(spec):
    with pytest.raises(ValueError, match="box"):
        BoxConvention.parse(spec)
