"""Dense linear probe: semantic segmentation mIoU from frozen patch tokens.

A linear layer maps each patch token to class logits; it is trained on the probe-train images
against each patch's class fractions (the share of the patch's mask pixels in each class), and
at evaluation its logit grid is upsampled bilinearly to the mask resolution and read per pixel,
as the DINOv2/SigLIP 2 linear segmentation probes do. mIoU averages the IoU of every class that
occurs in the truth or the prediction (background included).

Dataset (the mini Common Crawl writes it this way):
    DATASET/classnames.txt                 class id k on line k (0 = background)
    DATASET/SPLIT/*.tar                    KEY.jpg|png + KEY.seg.png (class id per pixel)
Probe-train images come from DATASET/train when it exists; otherwise the test images are split
in two halves by a seeded permutation (the mini Common Crawl ships one small split).
"""

from __future__ import annotations

import io
import logging

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from training.data.samples import IMAGE_EXTENSIONS, BadSample, decode_image
from training.eval.datasets import iter_split, read_lines, split_shards
from training.models.siglip import SigLIP2

log = logging.getLogger(__name__)


def decode_mask(data: bytes, size: int) -> torch.Tensor:
    """A class-id PNG → [size, size] long, squash-resized with nearest neighbour like the image."""
    try:
        with Image.open(io.BytesIO(data)) as mask:
            if mask.mode not in ("L", "P", "I", "I;16"):
                raise BadSample("bad_mask", f"mask mode {mask.mode} is not a class-id image")
            resized = mask.resize((size, size), Image.Resampling.NEAREST)
            return torch.from_numpy(np.asarray(resized, dtype=np.int64).copy())
    except (OSError, ValueError) as error:
        raise BadSample("corrupt_mask", str(error)) from error


def load_segmentation(
    dataset: str, image_size: int, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Images [N, 3, S, S], masks [N, S, S] and the number of bad samples skipped."""
    images, masks, skipped = [], [], 0
    for raw in iter_split(dataset, split):
        image = next((raw.files[e] for e in IMAGE_EXTENSIONS if e in raw.files), None)
        try:
            if image is None or "seg.png" not in raw.files:
                raise BadSample("incomplete_eval_sample", f"files: {sorted(raw.files)}")
            pair = decode_image(image, image_size), decode_mask(raw.files["seg.png"], image_size)
        except BadSample as error:
            log.warning("%s/%s %s: %s, skipped", dataset, split, raw.key, error)
            skipped += 1
            continue
        images.append(pair[0])
        masks.append(pair[1])
    if not images:
        raise FileNotFoundError(f"{dataset}/{split}: no usable segmentation samples")
    return torch.stack(images), torch.stack(masks), skipped


@torch.no_grad()
def patch_features(model: SigLIP2, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """[N, 3, S, S] → frozen patch tokens [N, G, G, D] (G = S / patch size), on CPU."""
    model.eval()
    device = next(model.parameters()).device
    grid = images.shape[-1] // model.cfg.vision.patch_size
    chunks = [
        model.encode_image(chunk.to(device))[1].float().cpu() for chunk in images.split(batch_size)
    ]
    tokens = torch.cat(chunks)
    return tokens.view(tokens.shape[0], grid, grid, tokens.shape[-1])


def patch_class_fractions(masks: torch.Tensor, grid: int, classes: int) -> torch.Tensor:
    """[N, S, S] class ids → [N, G, G, C]: the share of each patch's pixels in each class."""
    one_hot = F.one_hot(masks.clamp(0, classes - 1), classes).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, grid).permute(0, 2, 3, 1)


def train_linear_probe(
    features: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> torch.nn.Module:
    """A standardise-then-linear classifier fitted to soft targets ([M, D] → [M, C]) by
    full-batch AdamW: the probe sets are small, and full batches make it deterministic."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    linear = torch.nn.Linear(features.shape[1], targets.shape[1])
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    optimizer = torch.optim.AdamW(linear.parameters(), lr=lr, weight_decay=weight_decay)
    inputs = (features - mean) / std
    for _ in range(steps):
        optimizer.zero_grad()
        loss = -(targets * F.log_softmax(linear(inputs), dim=-1)).sum(-1).mean()
        loss.backward()
        optimizer.step()
    return torch.nn.Sequential(_Standardise(mean, std), linear).eval()


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@torch.no_grad()
def predict_masks(probe: torch.nn.Module, features: torch.Tensor, size: int) -> torch.Tensor:
    """[N, G, G, D] → [N, size, size] class ids: logits upsampled bilinearly, then argmax."""
    logits = probe(features).permute(0, 3, 1, 2)
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False).argmax(1)


def confusion_matrix(predicted: torch.Tensor, truth: torch.Tensor, classes: int) -> torch.Tensor:
    """[C, C] pixel counts, rows = true class, columns = predicted class; ids outside
    [0, classes) in the truth are ignored."""
    valid = (truth >= 0) & (truth < classes)
    index = truth[valid] * classes + predicted[valid].clamp(0, classes - 1)
    return torch.bincount(index.flatten(), minlength=classes * classes).view(classes, classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU = TP / (TP + FP + FN) per class; NaN for a class absent from truth and prediction."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    return torch.where(union > 0, true_positive / union.clamp_min(1), torch.nan)


def mean_iou(confusion: torch.Tensor) -> float:
    ious = iou_per_class(confusion)
    present = ~ious.isnan()
    return float(ious[present].mean()) if present.any() else float("nan")


def _probe_split(dataset: str, count: int, seed: int) -> tuple[str, torch.Tensor, torch.Tensor]:
    """("train" or "test", probe-train indices, probe-eval indices into the test images)."""
    try:
        split_shards(dataset, "train")
        return "train", torch.empty(0, dtype=torch.long), torch.arange(count)
    except FileNotFoundError:
        if count < 2:
            raise FileNotFoundError(f"{dataset}: a probe needs at least 2 images, found {count}")
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        half = count // 2
        return "test", order[:half], order[half:]


def segmentation_probe(
    model: SigLIP2, dataset: str, seed: int = 0, steps: int = 300
) -> dict[str, object]:
    """mIoU, pixel accuracy and per-class IoU of a linear probe on frozen patch tokens, with the
    all-majority-class predictor's mIoU as the floor."""
    classnames = read_lines(f"{dataset.rstrip('/')}/classnames.txt")
    size, classes = model.cfg.vision.image_size, len(classnames)
    images, masks, skipped = load_segmentation(dataset, size, "test")
    features = patch_features(model, images)
    grid = features.shape[1]
    source, train_index, eval_index = _probe_split(dataset, len(images), seed)
    if source == "train":
        train_images, train_masks, train_skipped = load_segmentation(dataset, size, "train")
        skipped += train_skipped
        train_features = patch_features(model, train_images)
    else:
        train_features, train_masks = features[train_index], masks[train_index]
    targets = patch_class_fractions(train_masks, grid, classes)
    probe = train_linear_probe(
        train_features.flatten(0, 2), targets.flatten(0, 2), steps=steps, seed=seed
    )
    predicted = predict_masks(probe, features[eval_index], size)
    truth = masks[eval_index]
    confusion = confusion_matrix(predicted, truth, classes)
    majority = int(
        torch.bincount(train_masks.flatten().clamp(0, classes - 1), minlength=classes).argmax()
    )
    floor = confusion_matrix(torch.full_like(truth, majority), truth, classes)
    ious = iou_per_class(confusion)
    return {
        "mIoU": mean_iou(confusion),
        "pixel_accuracy": float(confusion.diag().sum() / confusion.sum().clamp_min(1)),
        "baseline_majority_mIoU": mean_iou(floor),
        "iou_per_class": {
            name: (None if iou.isnan() else float(iou)) for name, iou in zip(classnames, ious)
        },
        "probe_train_images": len(train_features),
        "eval_images": len(eval_index),
        "probe_train_split": source,
        "skipped": skipped,
    }
