import io
import json

import pytest
from PIL import Image

from training.data.samples import (
    BadSample,
    decode_image,
    grounding_sample,
    image_text_sample,
    valid_refs,
)
from training.data.tars import RawSample


def _jpeg(width=40, height=20, colour=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_decoded_image_is_square_model_size_and_scaled_to_minus_one_one():
    image = decode_image(_jpeg(colour=(255, 0, 0)), 16)
    assert image.shape == (3, 16, 16)
    assert image[0].mean() > 0.95 and image[1].mean() < -0.9 and image.min() >= -1.0


def test_corrupt_image_is_a_bad_sample_not_a_crash():
    with pytest.raises(BadSample) as info:
        decode_image(_jpeg()[:50], 16)
    assert info.value.reason == "corrupt_image"


def test_image_text_sample_without_caption_is_bad():
    with pytest.raises(BadSample, match="missing_text"):
        image_text_sample(RawSample("k", {"jpg": _jpeg()}), 16)
    sample = image_text_sample(RawSample("k", {"jpg": _jpeg(), "txt": b" a red thing "}), 16)
    assert sample.caption == "a red thing" and sample.contrastive and sample.refs == []


def test_grounding_sample_keeps_valid_refs_and_is_not_contrastive():
    refs = [
        {"phrase": "red box", "box": [0.1, 0.2, 0.5, 0.6]},
        {"phrase": "x", "box": [0.5, 0, 0.4, 1]},
    ]
    raw = RawSample(
        "k", {"jpg": _jpeg(), "json": json.dumps({"source": "t", "refs": refs}).encode()}
    )
    sample = grounding_sample(raw, 16)
    assert sample.caption is None and not sample.contrastive
    assert sample.refs == [{"phrase": "red box", "box": [0.1, 0.2, 0.5, 0.6]}]


def test_grounding_sample_with_no_usable_ref_is_bad():
    raw = RawSample(
        "k", {"jpg": _jpeg(), "json": b'{"refs": [{"phrase": "", "box": [0, 0, 1, 1]}]}'}
    )
    with pytest.raises(BadSample, match="no_valid_refs"):
        grounding_sample(raw, 16)
    with pytest.raises(BadSample, match="bad_json"):
        grounding_sample(RawSample("k", {"jpg": _jpeg(), "json": b"{oops"}), 16)


@pytest.mark.parametrize(
    "box", [[0, 0, 1.2, 1], [0.5, 0.5, 0.5, 0.9], [0, 0, float("nan"), 1], [0, 0, 1]]
)
def test_invalid_boxes_are_dropped(box):
    assert valid_refs([{"phrase": "p", "box": box}]) == []
