"""Referring-expression grounding through LocCa's ARef task: phrase → 4 box tokens → IoU.

Acc@0.5 is the share of (image, phrase) pairs whose decoded box overlaps the true box with
IoU ≥ 0.5. Two trivial baselines put the number in context: the whole image, and a centred box
of the average true box size (what a model that ignores both image and phrase could learn).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import torch

from training.data.samples import IMAGE_EXTENSIONS, BadSample, decode_image, valid_refs
from training.eval.datasets import iter_split
from training.eval.embed import batched
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer

Box = tuple[float, float, float, float]


def box_iou(a: Box, b: Box) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def iter_referring_expressions(
    dataset: str, image_size: int, split: str = "test"
) -> Iterator[tuple[torch.Tensor, list[tuple[str, Box]]]]:
    """Each image, decoded, with its (phrase, true box) pairs, one sample at a time."""
    for raw in iter_split(dataset, split):
        image = next((raw.files[e] for e in IMAGE_EXTENSIONS if e in raw.files), None)
        if image is None or "json" not in raw.files:
            raise BadSample("incomplete_eval_sample", f"{dataset} {raw.key}: {sorted(raw.files)}")
        refs = valid_refs(json.loads(raw.files["json"]).get("refs"))
        yield decode_image(image, image_size), [(r["phrase"], tuple(r["box"])) for r in refs]


@torch.no_grad()
def predict_boxes(
    model: SigLIP2,
    tokenizer: Tokenizer,
    samples: Iterable[tuple[torch.Tensor, list[tuple[str, Box]]]],
    batch_size: int = 64,
) -> tuple[list[Box | None], list[Box]]:
    """Decoded and true boxes of every (image, phrase) query, in batches of `batch_size`
    queries. Images are held only while a batch may still need them."""
    model.eval()
    device = next(model.parameters()).device
    max_len = model.cfg.decoder.max_len
    box_ids = range(tokenizer.box_token_offset, tokenizer.task_token_offset)
    window: dict[int, torch.Tensor] = {}  # decoded images that queries not yet run refer to

    def queries() -> Iterator[tuple[int, str, Box]]:
        for index, (image, refs) in enumerate(samples):
            window[index] = image
            yield from ((index, phrase, box) for phrase, box in refs)

    predictions: list[Box | None] = []
    truth: list[Box] = []
    for chunk in batched(queries(), batch_size):
        images = torch.stack([window[index] for index, _, _ in chunk])
        _, patch_tokens = model.encode_image(images.to(device))
        prefixes = [
            [tokenizer.task_token("aref")] + tokenizer.text_ids(phrase)[: max_len - 5]
            for _, phrase, _ in chunk
        ]
        # A box's far corner lies past its near one (x1 > x0, y1 > y0 in either box format): a
        # barely trained decoder otherwise repeats one coordinate and outputs a zero-width box.
        decoded = model.decoder.greedy_decode(
            patch_tokens, prefixes, steps=4, allowed=box_ids, increasing={2: 0, 3: 1}
        )
        predictions += [tokenizer.decode_box(tokens) for tokens in decoded]
        truth += [box for _, _, box in chunk]
        last = chunk[-1][0]  # its image may have queries in the next batch
        for index in [i for i in window if i < last]:
            del window[index]
    return predictions, truth


def accuracy_at(predicted: list[Box | None], truth: list[Box], threshold: float = 0.5) -> float:
    hits = [p is not None and box_iou(p, t) >= threshold for p, t in zip(predicted, truth)]
    return sum(hits) / max(len(hits), 1)


def centred_box(truth: list[Box]) -> Box:
    width = sum(b[2] - b[0] for b in truth) / len(truth)
    height = sum(b[3] - b[1] for b in truth) / len(truth)
    return (0.5 - width / 2, 0.5 - height / 2, 0.5 + width / 2, 0.5 + height / 2)


def aref_accuracy(
    model: SigLIP2, tokenizer: Tokenizer, dataset: str, split: str = "test"
) -> dict[str, float]:
    samples = iter_referring_expressions(dataset, model.cfg.vision.image_size, split)
    predicted, truth = predict_boxes(model, tokenizer, samples)
    return {
        "acc@0.5": accuracy_at(predicted, truth),
        "baseline_whole_image": accuracy_at([(0.0, 0.0, 1.0, 1.0)] * len(truth), truth),
        "baseline_centre_box": accuracy_at([centred_box(truth)] * len(truth), truth),
        "queries": len(truth),
    }
