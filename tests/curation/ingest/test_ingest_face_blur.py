import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from curation.download.imaging import ImageOptions, process_image
from curation.ingest.boxes import pixel_box
from curation.ingest.face_blur import blur_regions, stored_frame_boxes


def checkerboard(width: int, height: int, cell: int = 4) -> Image.Image:
    ys, xs = np.mgrid[0:height, 0:width]
    board = (((xs // cell) + (ys // cell)) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([board] * 3, axis=2))


@pytest.mark.parametrize("method", ["gaussian", "pixelate"])
def test_only_the_boxes_are_blurred_and_their_detail_is_gone(method):
    image = checkerboard(120, 80)
    box = [0.25, 0.25, 0.75, 0.75]
    out = np.asarray(blur_regions(image, [box], method), float)
    original = np.asarray(image, float)
    x0, y0, x1, y1 = pixel_box(box, 120, 80)
    outside = np.ones(out.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], original[outside])
    # A 4-pixel checkerboard has a standard deviation of 127.5; blurred it is nearly flat grey.
    assert out[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].std() < 20


@pytest.mark.parametrize("mode", ["center_crop", "border", "keep_ratio_largest"])
def test_original_frame_boxes_follow_the_download_resize(mode):
    width, height, face = 300, 150, (200, 30, 260, 90)
    image = Image.new("RGB", (width, height), (128, 128, 128))
    ImageDraw.Draw(image).rectangle(
        [face[0], face[1], face[2] - 1, face[3] - 1], fill=(230, 20, 20)
    )
    data = io.BytesIO()
    image.save(data, format="PNG")
    stored = process_image(data.getvalue(), ImageOptions(100, mode))
    normalised = [face[0] / width, face[1] / height, face[2] / width, face[3] / height]
    (box,) = stored_frame_boxes([normalised], (width, height), (stored.width, stored.height), mode)
    pixels = np.asarray(Image.open(io.BytesIO(stored.jpeg)).convert("RGB"), int)
    red = np.abs(pixels - np.array([230, 20, 20])).sum(axis=2) < 120
    ys, xs = np.nonzero(red)
    expected = np.array(
        [
            box[0] * stored.width,
            box[1] * stored.height,
            box[2] * stored.width,
            box[3] * stored.height,
        ]
    )
    assert (
        np.abs(expected - np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])).max() <= 1.5
    )


def test_unknown_blur_method_fails_fast():
    with pytest.raises(ValueError, match="blur method"):
        blur_regions(Image.new("RGB", (4, 4)), [[0, 0, 1, 1]], "smudge")
