"""Held-out evaluation sets, drawn from their own random streams, in CLIP_benchmark's WebDataset layout.

    eval/zeroshot/{classnames.txt, zeroshot_classification_templates.txt, test/0.tar}  KEY.jpg KEY.cls
    eval/extreme_aspect/...   the same, at 3:1, 1:3, 4:1 and 1:4
    eval/retrieval/test/0.tar        KEY.jpg KEY.txt
    eval/refexp/test/0.tar           KEY.jpg KEY.json {"refs": [{"phrase", "box"}]}
    eval/segmentation/{classnames.txt, test/0.tar}  KEY.jpg KEY.seg.png (0 = background, k = class k)

Concepts here are uniform (balanced classes), unlike the Zipf-distributed web.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation.minicc.captions import good_caption
from curation.minicc.parallel import ordered_map
from curation.minicc.render import encode, render_scene
from curation.minicc.vocab import COLOURS, KINDS
from curation.minicc.world import EXTREME_ASPECT_RATIOS, Scene, sample_scene
from training.data.tars import Sample, write_tar

EVAL_SETS: tuple[str, ...] = ("zeroshot", "extreme_aspect", "retrieval", "refexp", "segmentation")
ZEROSHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c}.",
    "a drawing of a {c}.",
    "a {c} shape.",
    "an image of a {c}.",
    "a picture with a {c} in it.",
)
EVAL_QUALITY = 92


class _UniformConcepts:
    """Same interface as world.ConceptSampler, but uniform, optionally forcing the kind."""

    def __init__(self, forced_kind: str | None = None) -> None:
        self.forced_kind = forced_kind

    def kind(self, rng: np.random.Generator) -> str:
        return self.forced_kind or KINDS[int(rng.integers(len(KINDS)))]

    def colour(self, rng: np.random.Generator) -> str:
        colours = list(COLOURS)
        return colours[int(rng.integers(len(colours)))]


@dataclass
class EvalItem:
    key: str
    scene: Scene
    label: int | None = None  # class index for the zero-shot sets


def single_shape_scene(
    rng: np.random.Generator, scene_id: str, kind: str, ratio: tuple[float, float] | None = None
) -> Scene:
    """A zero-shot set's picture: one shape of `kind` in a uniformly drawn colour, 224-640 px."""
    return sample_scene(
        rng,
        scene_id,
        _UniformConcepts(kind),
        shape_count=1,
        ratio=ratio,
        long_side_range=(224, 640),
    )


def labelled_shape_picture(seed: int, index: int) -> tuple[bytes, int]:
    """(JPEG, kind index) of picture `index` of a labelled stream drawn like the zero-shot set
    (a uniformly drawn kind, then its scene), for probes and supervised references. Pass a
    seed apart from the world's so the pictures are not the held-out set's."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(KINDS)))
    scene = single_shape_scene(rng, f"labelled-{index}", KINDS[label])
    return encode(render_scene(scene).image, "jpeg", EVAL_QUALITY), label


def plan_eval_sets(seed: int, per_set: int) -> dict[str, list[EvalItem]]:
    """Scenes of every evaluation set; each set has its own stream, independent of the web."""
    plans: dict[str, list[EvalItem]] = {}
    for set_number, name in enumerate(EVAL_SETS):
        items = []
        for i in range(per_set):
            rng = np.random.default_rng([seed, 1000 + set_number, i])
            scene_id = f"{name}-{i:06d}"
            if name in ("zeroshot", "extreme_aspect"):
                label = i % len(KINDS)
                ratio = (
                    EXTREME_ASPECT_RATIOS[i % len(EXTREME_ASPECT_RATIOS)]
                    if name == "extreme_aspect"
                    else None
                )
                scene = single_shape_scene(rng, scene_id, KINDS[label], ratio)
                items.append(EvalItem(key=f"{i:06d}", scene=scene, label=label))
            else:
                count = None if name == "retrieval" else int(rng.integers(2, 4))
                scene = sample_scene(
                    rng, scene_id, _UniformConcepts(), shape_count=count, long_side_range=(224, 640)
                )
                items.append(EvalItem(key=f"{i:06d}", scene=scene))
        plans[name] = items
    return plans


def _sample(task: tuple[str, EvalItem]) -> Sample:
    name, item = task
    rendered = render_scene(item.scene)
    members = {"jpg": encode(rendered.image, "jpeg", EVAL_QUALITY)}
    if item.label is not None:
        members["cls"] = str(item.label).encode()
    elif name == "retrieval":
        members["txt"] = good_caption(item.scene).encode()
    elif name == "refexp":
        refs = item.scene.grounding_refs(rendered.boxes)
        members["json"] = json.dumps({"refs": refs}, sort_keys=True).encode()
    elif name == "segmentation":
        # shape index -> class id (kind index + 1); 0 stays background.
        lut = [0] * 256
        for index, shape in enumerate(item.scene.shapes, start=1):
            lut[index] = KINDS.index(shape.kind) + 1
        members["seg.png"] = encode(rendered.shape_index.point(lut), "png")
    return item.key, members


def write_eval_sets(
    root: Path, plans: dict[str, list[EvalItem]], processes: int = 1
) -> dict[str, int]:
    """Write every set under root/eval; returns the number of samples per set."""
    counts = {}
    for name, items in plans.items():
        folder = root / "eval" / name
        samples = list(
            ordered_map(_sample, [(name, item) for item in items], processes, f"eval set {name}")
        )
        write_tar(folder / "test" / "0.tar", samples)
        (folder / "test" / "nshards.txt").write_text("1\n")
        if name in ("zeroshot", "extreme_aspect"):
            (folder / "classnames.txt").write_text("\n".join(KINDS) + "\n")
            (folder / "zeroshot_classification_templates.txt").write_text(
                "\n".join(ZEROSHOT_TEMPLATES) + "\n"
            )
        if name == "segmentation":
            (folder / "classnames.txt").write_text("\n".join(("background", *KINDS)) + "\n")
        counts[name] = len(items)
    return counts


def contaminant_scenes(plans: dict[str, list[EvalItem]], count: int) -> list[tuple[str, Scene]]:
    """(eval key, scene) pairs to plant into the web, alternating zero-shot and retrieval."""
    picks = []
    for i in range(count):
        name = ("zeroshot", "retrieval")[i % 2]
        item = plans[name][(i // 2) % len(plans[name])]
        picks.append((f"{name}/{item.key}", item.scene))
    return picks
