"""How learnable are the mini web's shape kinds for `tiny`'s image tower, given the labels?

The reference for `minicc_quality.py`'s zero-shot number: the same vision tower (64 px, patch 8,
width 64, depth 2) and a linear head trained with cross-entropy on the kind of single-shape
scenes drawn like the zero-shot eval set's (uniform kinds and colours, 224-640 px, any aspect
ratio, squashed to the square input as the trainer does), from a random stream of their own.
It reports top-1 on the world's held-out zero-shot set as training goes. Supervision is the
easiest case: no caption to read the kind from, one shape per picture, balanced classes.

`--tower cnn` swaps the ViT for a small convolutional net (three blocks of two 3x3 convolutions,
16/32/64 channels, batch norm, max pooling) on the same 64-px input: a model with translation
built in, to tell "the kind is not in the 64-px pixels" from "a ViT this small is slow to read it".
`--optimizer muon` trains the ViT with the trainer's Muon split (Muon for the blocks' matrices,
AdamW for the rest); the default is plain AdamW.
`--texture-period P --shade-darken D` render the labelled pictures with another kind texture
(shapes.TEXTURE_PERIOD, render.SHADE_DARKEN; the held-out set keeps the world's), to compare
texture settings before a world is built with one.

Generator 4 (kind textures), measured with this tower and head (AdamW, batch 64, 4,000 pictures,
800 steps, one seed, held-out top-1 on 600 labelled pictures of another stream, chance 8.3%, 2
shared cores at load ~9): no texture (generator 3) 27.3%; texture period 0.5 x radius, shade 0.7
27.5%; 0.8 / 0.55 51.5%; 1.0 / 0.55 53.8%; 1.3 / 0.55 46.8%; 0.8 / 0.4 60.2% (kept).

Generator 5 (2026-12-07, one seed each, 1 torch thread, 1,000 steps x 64, the small world's
1,200-picture held-out set, chance 8.3%, two runs at a time): Muon 75.6% (53.5% at step 500),
AdamW 67.9%, Muon with `--override patch_size=4` (16 x 16 tokens, 3.3x the time) 85.3%.

    .venv/bin/python benchmarks/kind_supervised.py [--world /tmp/minicc-quality --pictures 8000 --steps 4000 --tower cnn --optimizer muon --override patch_size=4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from minicc_quality import ensure_world, labelled_pictures

from curation.minicc import render, shapes
from curation.minicc.vocab import KINDS
from training.eval.zeroshot import load_labelled_images
from training.models.config import VisionConfig, model_config
from training.models.vision import VisionTower, patchify
from training.optim.build import build_optimizer
from training.optim.config import OptimConfig


class ViTClassifier(torch.nn.Module):
    """tiny's vision tower and a linear head on its pooled output."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tower, self.head = VisionTower(cfg), torch.nn.Linear(cfg.width, len(KINDS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches, _ = patchify(images, self.cfg.patch_size)
        grid = (self.cfg.image_size // self.cfg.patch_size,) * 2
        return self.head(self.tower(patches, grid_size=grid)[0])


def small_cnn(classes: int) -> torch.nn.Module:
    """Three blocks of two 3x3 conv + batch norm + ReLU, then 2x2 max pooling; global max pool."""
    layers: list[torch.nn.Module] = []
    channels = 3
    for width in (16, 32, 64):
        for _ in range(2):
            layers += [
                torch.nn.Conv2d(channels, width, 3, padding=1),
                torch.nn.BatchNorm2d(width),
                torch.nn.ReLU(),
            ]
            channels = width
        layers.append(torch.nn.MaxPool2d(2))
    return torch.nn.Sequential(
        *layers,
        torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(channels, classes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--world",
        type=Path,
        default=Path("/tmp/minicc-quality"),
        help="mini Common Crawl folder (built at the small scale if missing)",
    )
    parser.add_argument("--pictures", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw")
    parser.add_argument(
        "--tower",
        choices=("vit", "cnn"),
        default="vit",
        help="tiny's ViT (default) or a small CNN on the same input",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=INT",
        help="a vision tower field of tiny, e.g. patch_size=4 (repeat; pos_grid_size follows)",
    )
    parser.add_argument("--texture-period", type=float, help="override shapes.TEXTURE_PERIOD")
    parser.add_argument("--shade-darken", type=float, help="override render.SHADE_DARKEN")
    options = parser.parse_args()
    ensure_world(options.world)
    # After the world exists (its build keeps the code's texture); the forked render workers
    # inherit these.
    if options.texture_period is not None:
        shapes.TEXTURE_PERIOD = options.texture_period
    if options.shade_darken is not None:
        render.SHADE_DARKEN = options.shade_darken
    torch.manual_seed(0)
    started = time.perf_counter()
    overrides = {f"vision.{k}": int(v) for k, _, v in (o.partition("=") for o in options.override)}
    if "vision.patch_size" in overrides and "vision.pos_grid_size" not in overrides:
        size = overrides.get("vision.image_size", model_config("tiny").vision.image_size)
        overrides["vision.pos_grid_size"] = size // overrides["vision.patch_size"]
    vision_cfg = model_config("tiny", **overrides).vision
    print(f"vision tower: {vision_cfg}")
    images, labels = labelled_pictures(options.pictures, vision_cfg.image_size, options.processes)
    print(f"{options.pictures} labelled pictures rendered in {time.perf_counter() - started:.0f} s")
    eval_images, eval_labels = load_labelled_images(
        str(options.world / "eval" / "zeroshot"), vision_cfg.image_size
    )
    model = small_cnn(len(KINDS)) if options.tower == "cnn" else ViTClassifier(vision_cfg)
    if options.optimizer == "muon":  # the trainer's split: Muon for the ViT's block matrices
        optimizer = build_optimizer(
            model, OptimConfig(name="muon", lr=options.lr, weight_decay=1e-4)
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)

    chance = torch.bincount(eval_labels).max().item() / len(eval_labels)
    print(f"eval: {len(eval_labels)} pictures, chance {chance:.1%}")
    generator = torch.Generator().manual_seed(0)
    for step in range(1, options.steps + 1):
        index = torch.randint(0, len(labels), (options.batch_size,), generator=generator)
        model.train()
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 500 == 0 or step == options.steps:
            model.eval()  # the CNN's batch norm: running statistics
            with torch.no_grad():
                train_top1 = (model(images[:1000]).argmax(1) == labels[:1000]).float().mean()
                eval_top1 = (model(eval_images).argmax(1) == eval_labels).float().mean()
            print(
                f"step {step:5d}  loss {loss.item():.3f}  train top-1 {train_top1:.1%}  "
                f"held-out zero-shot set top-1 {eval_top1:.1%}",
                flush=True,
            )
    print(
        f"held-out top-1 / chance: {eval_top1 / chance:.1f}x ({options.tower}, {options.optimizer}, "
        f"supervised, {options.steps} steps x {options.batch_size} pictures, "
        f"{time.perf_counter() - started:.0f} s; compare minicc_quality.py's zero-shot / chance)"
    )


if __name__ == "__main__":
    main()
