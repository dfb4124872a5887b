"""Hand-made grounding fixtures: images with coloured rectangles at known pixel boxes, and the
same boxes written in each dataset's native annotation format and box convention.

A box here is (x0, y0, x1, y1) in 0-based continuous pixel coordinates (x1, y1 exclusive): the
rectangle fills pixels x0..x1-1, y0..y1-1. `check_refs_on_image` decodes a converted sample and
checks numerically that every normalised box lands on its rectangle's colour.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (128, 128, 128)
WIDTH, HEIGHT = 200, 160


@dataclass
class Target:
    phrase: str
    box: tuple[int, int, int, int]  # as annotated (may stick out of the image)
    colour: tuple[int, int, int]

    @property
    def visible(self) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.box
        return max(x0, 0), max(y0, 0), min(x1, WIDTH), min(y1, HEIGHT)


@dataclass
class Scene:
    image_id: int
    targets: list[Target]
    # Boxes that must be dropped, with the reason the converter must count.
    bad: list[tuple[str, tuple[int, int, int, int], str]] = field(default_factory=list)
    image_format: str = "JPEG"

    def render(self) -> bytes:
        image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for target in self.targets:
            x0, y0, x1, y1 = target.visible
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=target.colour)
        out = io.BytesIO()
        image.save(out, format=self.image_format, quality=95)
        return out.getvalue()

    def all_boxes(self) -> list[tuple[str, tuple[int, int, int, int]]]:
        return [(t.phrase, t.box) for t in self.targets] + [(p, b) for p, b, _ in self.bad]


def scenes() -> list[Scene]:
    """Three images: plain boxes, a box sticking out (clipped), one outside, a zero-area one,
    unicode phrases, and a PNG source (re-encoded to JPEG by the converter)."""
    return [
        Scene(
            101,
            [
                Target("red cup", (20, 30, 80, 90), (230, 20, 20)),
                Target("blue book", (110, 10, 190, 60), (20, 20, 230)),
            ],
        ),
        Scene(
            102,
            [
                Target("红色的杯子 café ☕", (40, 40, 100, 120), (20, 210, 20)),
                Target("yellow lamp partly outside", (150, 100, 240, 200), (235, 220, 20)),
            ],
            bad=[
                ("ghost outside", (210, 10, 250, 50), "box_outside_image"),
                ("flat line", (50, 50, 50, 90), "zero_area_box"),
            ],
        ),
        Scene(103, [Target("Ärmel der Jacke", (0, 0, 60, 50), (200, 20, 200))], image_format="PNG"),
    ]


def image_name(scene: Scene, stem: str | None = None) -> str:
    return f"{stem or scene.image_id}.{'jpg' if scene.image_format == 'JPEG' else 'png'}"


def write_images(folder: Path, scenes_: list[Scene], name=image_name) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for scene in scenes_:
        (folder / name(scene)).write_bytes(scene.render())


# --- native formats -----------------------------------------------------------------------------


def xywh(box):
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]


def write_coco_style(path: Path, scenes_: list[Scene], crowd_box: bool = True) -> None:
    """Objects365 / COCO: xywh pixels; category names are the phrases; one crowd box to skip."""
    phrases = sorted({p for s in scenes_ for p, _ in s.all_boxes()})
    category = {p: i + 1 for i, p in enumerate(phrases)}
    boxes = [(s.image_id, p, b) for s in scenes_ for p, b in s.all_boxes()]
    annotations = [
        {
            "id": i + 1,
            "image_id": image_id,
            "category_id": category[p],
            "bbox": xywh(b),
            "iscrowd": 0,
            "area": 1.0,
        }
        for i, (image_id, p, b) in enumerate(boxes)
    ]
    if crowd_box:
        annotations.append(
            {
                "id": 999,
                "image_id": scenes_[0].image_id,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "iscrowd": 1,
            }
        )
    document = {
        "images": [
            {
                "id": s.image_id,
                "file_name": f"patch0/{image_name(s)}",
                "width": WIDTH,
                "height": HEIGHT,
            }
            for s in scenes_
        ],
        "annotations": annotations,
        "categories": [{"id": i, "name": p} for p, i in category.items()],
    }
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def write_openimages(folder: Path, scenes_: list[Scene]) -> list[Path]:
    """Box CSV with XMin, XMax, YMin, YMax fractions + a header-less class descriptions CSV."""
    phrases = sorted({p for s in scenes_ for p, _ in s.all_boxes()})
    mid = {p: f"/m/0{i:04d}" for i, p in enumerate(phrases)}
    header = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
    lines = [header]
    for s in scenes_:
        for phrase, (x0, y0, x1, y1) in s.all_boxes():
            lines.append(
                f"{s.image_id},xclick,{mid[phrase]},1,{x0 / WIDTH},{x1 / WIDTH},{y0 / HEIGHT},"
                f"{y1 / HEIGHT},0,0,0,0,0"
            )
    lines.append(
        f"{scenes_[0].image_id},xclick,{mid[phrases[0]]},1,0.1,0.9,0.1,0.9,0,0,1,0,0"
    )  # group-of
    lines.append(f"{scenes_[0].image_id},xclick,/m/unknown,1,0.1,0.2,0.1,0.2,0,0,0,0,0")
    boxes = folder / "oidv6-train-annotations-bbox.csv"
    boxes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    names = folder / "class-descriptions-boxable.csv"
    names.write_text("".join(f'{m},"{p}"\n' for p, m in mid.items()), encoding="utf-8")
    return [boxes, names]


def write_visualgenome(folder: Path, scenes_: list[Scene], coco_ids: dict[int, int]) -> list[Path]:
    regions = [
        {
            "id": s.image_id,
            "regions": [
                {
                    "region_id": s.image_id * 10 + i,
                    "image_id": s.image_id,
                    "phrase": f"  {p} ",
                    "x": b[0],
                    "y": b[1],
                    "width": b[2] - b[0],
                    "height": b[3] - b[1],
                }
                for i, (p, b) in enumerate(s.all_boxes())
            ],
        }
        for s in scenes_
    ]
    data = [
        {
            "image_id": s.image_id,
            "width": WIDTH,
            "height": HEIGHT,
            "coco_id": coco_ids.get(s.image_id),
            "url": f"https://cs.example/VG_100K_2/{image_name(s)}",
        }
        for s in scenes_
    ]
    paths = [folder / "region_descriptions.json", folder / "image_data.json"]
    paths[0].write_text(json.dumps(regions, ensure_ascii=False), encoding="utf-8")
    paths[1].write_text(json.dumps(data), encoding="utf-8")
    return paths


def write_grand(path: Path, scenes_: list[Scene], one_based: bool = False) -> None:
    """xyxy pixel boxes; phrases as attribute sentences (with the pipeline's role prefix) or labels."""
    document = {}
    for s in scenes_:
        objects = []
        for i, (phrase, (x0, y0, x1, y1)) in enumerate(s.all_boxes()):
            box = [x0 + 1, y0 + 1, x1, y1] if one_based else [x0, y0, x1, y1]
            obj = {"id": i, "bbox": box, "labels": [phrase.replace(" ", "_")], "segmentation": {}}
            if i % 2 == 0:
                obj["attributes"] = f"Assistant: {phrase}"
            objects.append(obj)
        document[image_name(s)] = {"objects": objects, "short_captions": []}
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def refcoco_file_name(scene: Scene) -> str:
    return (
        f"COCO_train2014_{scene.image_id:012d}.{'jpg' if scene.image_format == 'JPEG' else 'png'}"
    )


def write_refcoco_dataset(
    folder: Path, scenes_: list[Scene], splits: dict[int, str], as_json: bool
) -> list[Path]:
    """refs(*).p (or .json) + instances.json; two sentences per ref."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations, refs = [], [], []
    for s in scenes_:
        images.append(
            {"id": s.image_id, "file_name": refcoco_file_name(s), "width": WIDTH, "height": HEIGHT}
        )
        for phrase, box in s.all_boxes():
            ann_id = len(annotations) + 1
            annotations.append(
                {"id": ann_id, "image_id": s.image_id, "bbox": xywh(box), "category_id": 1}
            )
            refs.append(
                {
                    "ref_id": ann_id,
                    "ann_id": ann_id,
                    "image_id": s.image_id,
                    "split": splits.get(s.image_id, "train"),
                    "category_id": 1,
                    "sentences": [
                        {"sent": phrase, "raw": phrase},
                        {"sent": f"the {phrase}", "raw": ""},
                    ],
                }
            )
    instances = folder / "instances.json"
    instances.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "thing"}],
            },
            ensure_ascii=False,
        )
    )
    refs_path = folder / ("refs(umd).json" if as_json else "refs(unc).p")
    if as_json:
        refs_path.write_text(json.dumps(refs, ensure_ascii=False), encoding="utf-8")
    else:
        refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    return [refs_path, instances]


# --- checking -----------------------------------------------------------------------------------


def colour_extent(
    image: np.ndarray, colour: tuple[int, int, int]
) -> tuple[int, int, int, int] | None:
    """Pixel bounds (x0, y0, x1 exclusive, y1 exclusive) of the pixels close to `colour`."""
    close = np.abs(image.astype(int) - np.array(colour)).sum(axis=2) < 90
    ys, xs = np.nonzero(close)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def check_refs_on_image(
    jpeg: bytes, refs: list[dict], scene: Scene, min_share: float = 0.95
) -> None:
    """Every converted box sits on its target's colour (to within a pixel) and covers it.

    `min_share` of the box's pixels must be the colour (a downscaled image blends its edges).
    """
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    height, width = image.shape[:2]
    by_phrase = {t.phrase: t for t in scene.targets}
    assert {ref["phrase"].removeprefix("the ") for ref in refs} == set(by_phrase)
    for ref in refs:
        target = by_phrase[ref["phrase"].removeprefix("the ")]
        x0, y0, x1, y1 = ref["box"]
        converted = np.array([x0 * width, y0 * height, x1 * width, y1 * height])
        extent = colour_extent(image, target.colour)
        assert extent is not None, f"{target.phrase}: colour not in the image"
        assert np.abs(converted - np.array(extent)).max() <= 1.0, (target.phrase, converted, extent)
        inside = image[
            round(converted[1]) : round(converted[3]), round(converted[0]) : round(converted[2])
        ]
        share = (np.abs(inside.astype(int) - np.array(target.colour)).sum(axis=2) < 90).mean()
        assert share > min_share, f"{target.phrase}: only {share:.0%} of the box is its colour"
