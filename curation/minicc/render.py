"""Scene description -> pixels: the RGB image, a per-pixel shape-index mask, and each shape's box."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from curation.minicc.shapes import kind_texture, shape_outline
from curation.minicc.vocab import COLOURS, POSITIONS, SHARED_SCENE_SCALE, SIZES
from curation.minicc.world import Scene

Box = tuple[float, float, float, float]


@dataclass
class RenderedScene:
    image: Image.Image  # RGB
    shape_index: Image.Image  # "L": 0 = background, i + 1 = scene.shapes[i] (later shapes occlude)
    boxes: list[Box]  # normalised xyxy of each shape's full outline


def _background(scene: Scene) -> Image.Image:
    """The backdrop, built at low resolution or as a repeating pattern and scaled up by Pillow
    (full-resolution numpy arithmetic was most of the build time)."""
    w, h = scene.width, scene.height
    rng = np.random.default_rng(scene.texture_seed)
    first, second = scene.tones
    if scene.background == "solid":
        return Image.new("RGB", (w, h), first)
    if scene.background == "gradient":
        angle = rng.uniform(0, np.pi)
        ys, xs = np.mgrid[0:32, 0:32].astype(np.float32) / 31
        t = xs * np.cos(angle) + ys * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        mask = Image.fromarray((t * 255).astype(np.uint8), "L").resize((w, h), Image.BILINEAR)
        return Image.composite(
            Image.new("RGB", (w, h), second), Image.new("RGB", (w, h), first), mask
        )
    if scene.background == "stripes":
        period = max(4, int(min(w, h) * rng.uniform(0.04, 0.12)))
        cells_x, cells_y = -(-w // period), -(-h // period)
        vertical = rng.random() < 0.5
        pattern = (np.arange(cells_x if vertical else cells_y) % 2).reshape(
            (1, -1) if vertical else (-1, 1)
        )
        tones = np.array([first, second], dtype=np.uint8)
        cells = Image.fromarray(tones[pattern], "RGB")
        upscaled = cells.resize(
            (
                cells.width * period if cells.width > 1 else w,
                cells.height * period if cells.height > 1 else h,
            ),
            Image.NEAREST,
        )
        return upscaled.crop((0, 0, w, h))
    if scene.background == "noise":
        # Blocky noise, coarse enough that JPEG files stay web-sized.
        small = (max(1, h // 8), max(1, w // 8), 3)
        cells = np.array(first, dtype=np.float32) + rng.normal(0, 28, size=small)
        return Image.fromarray(np.clip(cells, 0, 255).astype(np.uint8), "RGB").resize(
            (w, h), Image.BILINEAR
        )
    raise ValueError(f"scene {scene.scene_id}: unknown background {scene.background!r}")


# The "unsafe" stand-in: concentric rings in two tones no shape or background uses, over the
# whole picture (it replaces the backdrop; the shapes are drawn on top), each ring
# UNSAFE_RING_WIDTH x the short side wide, round a seeded centre. Abstract on purpose: it depicts
# nothing real. It covers everything outside the shapes, in bands wide enough that a 16-px patch
# of a 64-px input is mostly one tone, so that even a randomly initialised tiny-clip's embeddings
# separate it (tests/curation/test_nsfw_bar.py). Measured with such a scorer, head fitted on
# half of 1,000 rendered scenes (a fifth unsafe) and measured on the other half: a disc 0.6 of
# the short side across, rings 0.075 wide: 81% removed at 13% false removal (400 scenes, half
# unsafe); whole picture, rings 0.075: 100% at 0.75%; rings 0.25: 100% at 0.25%.
UNSAFE_TONES = ((255, 0, 200), (20, 255, 60))
UNSAFE_RING_WIDTH = 0.25
# A lone shape's centre is pulled toward the middle by this factor (1 = its position's centre),
# so a large shape is not cut off by the border; "top left" still means the top-left quadrant.
LONE_SHAPE_SPREAD = 0.7


def _draw_unsafe_pattern(image: Image.Image, scene: Scene) -> None:
    w, h = image.size
    rng = np.random.default_rng([scene.texture_seed, 0x0BAD])
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ring = np.hypot(xs - cx, ys - cy) // (UNSAFE_RING_WIDTH * min(w, h))
    tones = np.array(UNSAFE_TONES, dtype=np.uint8)
    image.paste(Image.fromarray(tones[ring.astype(np.int64) % 2], "RGB"), (0, 0))


# The texture's second shade: a dark colour is lightened by this share of the way to white, any
# other darkened to this share of itself. Strong contrast made the kind far easier to learn
# (see shapes.TEXTURE_PERIOD); the lighter tone is the colour itself, so it still reads as one.
SHADE_LIGHTEN = 0.35
SHADE_DARKEN = 0.4


def texture_shade(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """The second tone of a shape's texture: the same colour, darker (or lighter if dark)."""
    rgb = np.array(colour, dtype=np.float32)
    if float(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) < 80:
        shade = rgb + (255 - rgb) * SHADE_LIGHTEN
    else:
        shade = rgb * SHADE_DARKEN
    return tuple(int(round(float(c))) for c in shade)


def _shape_fill(shape, box: tuple[int, int, int, int], cx: float, cy: float, r: float):
    """The shape's textured fill over `box`: its colour and a shade of it, in its kind's pattern."""
    weight = kind_texture(shape.kind, box, cx, cy, r, shape.rotation)[..., None]
    base = np.array(COLOURS[shape.colour], dtype=np.float32)
    shade = np.array(texture_shade(COLOURS[shape.colour]), dtype=np.float32)
    pixels = base + (shade - base) * weight
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def render_scene(scene: Scene) -> RenderedScene:
    """Draw a scene deterministically (the same scene always gives the same pixels)."""
    w, h = scene.width, scene.height
    image = _background(scene)
    if scene.unsafe:
        _draw_unsafe_pattern(image, scene)
    shape_index = Image.new("L", (w, h), 0)
    boxes: list[Box] = []
    lone = len(scene.shapes) == 1
    spread = LONE_SHAPE_SPREAD if lone else 1.0
    scale = 1.0 if lone else SHARED_SCENE_SCALE
    for index, shape in enumerate(scene.shapes, start=1):
        fx, fy = POSITIONS[shape.position]
        cx = (0.5 + (fx - 0.5) * spread + shape.offset[0]) * w
        cy = (0.5 + (fy - 0.5) * spread + shape.offset[1]) * h
        radius = SIZES[shape.size] * scale * min(w, h) / 2
        outline = shape_outline(shape.kind, cx, cy, radius, shape.rotation)
        # Draw the mask only over the shape's own extent, then paste it there.
        xs = [x for polygon, _ in outline for x, _ in polygon]
        ys = [y for polygon, _ in outline for _, y in polygon]
        left, top = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
        right, bottom = min(w, math.ceil(max(xs)) + 1), min(h, math.ceil(max(ys)) + 1)
        if right <= left or bottom <= top:
            boxes.append((0.0, 0.0, 0.0, 0.0))
            continue
        mask = Image.new("L", (right - left, bottom - top), 0)
        draw = ImageDraw.Draw(mask)
        for polygon, filled in outline:
            draw.polygon([(x - left, y - top) for x, y in polygon], fill=255 if filled else 0)
        bbox = mask.getbbox() or (0, 0, 0, 0)
        boxes.append(
            ((bbox[0] + left) / w, (bbox[1] + top) / h, (bbox[2] + left) / w, (bbox[3] + top) / h)
        )
        fill = _shape_fill(shape, (left, top, right, bottom), cx, cy, radius)
        image.paste(fill, (left, top, right, bottom), mask=mask)
        shape_index.paste(index, (left, top, right, bottom), mask=mask)
    return RenderedScene(image=image, shape_index=shape_index, boxes=boxes)


def encode(image: Image.Image, fmt: str, quality: int = 88) -> bytes:
    """Encode deterministically (no timestamps or random metadata in JPEG/PNG output)."""
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=False)
    elif fmt == "png":
        image.save(buffer, "PNG", optimize=False, compress_level=1)
    else:
        raise ValueError(f"unsupported image format {fmt!r}")
    return buffer.getvalue()
