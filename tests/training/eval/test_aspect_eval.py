import io

import pytest
import torch
from eval_set_writer import COLOURS, write_classification_set, write_shard
from PIL import Image

from training.data.samples import decode_image
from training.eval.aspect import aspect_zeroshot, embed_naflex
from training.eval.embed import embed_images
from training.eval.run import evaluate
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SigLIP2(model_config("tiny", distill=None)).eval()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def strip(label: int, wide: bool) -> Image.Image:
    """A 4:1 strip (or 1:4) with a square of the class colour in its middle."""
    image = Image.new("RGB", (256, 64) if wide else (64, 256), (40, 40, 40))
    left, top = (112, 16) if wide else (16, 112)
    image.paste(COLOURS[label], (left, top, left + 32, top + 32))
    return image


def test_naflex_input_of_a_model_sized_square_image_equals_the_square_path(model):
    """At the square input's patch count, a square image gets the same grid either way."""
    size = model.cfg.vision.image_size
    images = [jpeg(Image.effect_noise((size, size), 40 + 10 * i).convert("RGB")) for i in range(3)]
    square = embed_images(model, torch.stack([decode_image(data, size) for data in images]))
    naflex = embed_naflex(model, images, (size // model.cfg.vision.patch_size) ** 2)
    torch.testing.assert_close(naflex, square, atol=1e-5, rtol=1e-5)


def test_extreme_aspect_images_keep_their_shape_under_naflex(model, tmp_path):
    folder = tmp_path / "extreme_aspect"
    folder.mkdir()
    (folder / "classnames.txt").write_text("red square\nblue square\n")
    samples = [
        (f"{i:06d}", {"jpg": jpeg(strip(i % 2, wide=i % 4 < 2)), "cls": str(i % 2).encode()})
        for i in range(8)
    ]
    write_shard(folder / "test" / "0.tar", samples)
    tokenizer = Tokenizer(context_length=model.cfg.text.context_length)
    metrics = aspect_zeroshot(model, tokenizer, str(folder))
    assert metrics["samples"] == 8 and metrics["classes"] == 2 and metrics["chance"] == 0.5
    assert metrics["seq_len"] == 64
    assert 0.0 <= metrics["square_top1"] <= 1.0 and 0.0 <= metrics["naflex_top1"] <= 1.0
    # A 4:1 strip at 64 patches is a 16 x 4 grid: other inputs than the squashed 8 x 8 square.
    size = model.cfg.vision.image_size
    data = samples[0][1]["jpg"]
    square = embed_images(model, decode_image(data, size)[None])
    assert not torch.allclose(embed_naflex(model, [data], 64), square, atol=1e-3)


def test_aspect_is_an_eval_task(model, tmp_path):
    write_classification_set(tmp_path / "extreme_aspect", count=4)
    results = evaluate(model, str(tmp_path), ["aspect"])
    assert "error" not in results["aspect"], results
    assert results["aspect"]["square_top1"] == results["aspect"]["naflex_top1"]  # square images
