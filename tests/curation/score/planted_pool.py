"""A small download pool with planted duplicates, near-duplicates, eval contaminants and faults,
written exactly in the pool contract layout (NNNNN.tar + NNNNN.parquet), plus its truth table.

Used by the score/neardup/shards tests and the score benchmark until the mini Common Crawl's
download output is available to them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 50, 170),
    "orange": (245, 140, 30),
}
KINDS = ("circle", "square", "triangle")


@dataclass(frozen=True)
class PlantedPool:
    pool: Path
    eval_dir: Path
    truth: pa.Table  # uid, key, shard, dup_group (nullable), eval_name (nullable), corrupt, status


def draw_picture(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, str]:
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    phrases = []
    for _ in range(int(rng.integers(1, 4))):
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        kind = KINDS[int(rng.integers(len(KINDS)))]
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        r = rng.uniform(0.1, 0.3) * min(width, height)
        box = (cx - r, cy - r, cx + r, cy + r)
        if kind == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        elif kind == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[colour])
        phrases.append(f"a {colour} {kind}")
    # Texture so that unrelated pictures do not share a pixel hash by accident.
    for _ in range(12):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        draw.line(
            (x, y, x + rng.uniform(-60, 60), y + rng.uniform(-60, 60)),
            fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
            width=3,
        )
    return image, " and ".join(phrases) + " on a plain background"


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def near_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A re-upload: rescaled, slightly brighter; the caller re-encodes it at another quality."""
    scale = rng.uniform(0.7, 0.9)
    copy = image.resize(
        (max(32, round(image.width * scale)), max(32, round(image.height * scale))), Image.BICUBIC
    )
    return ImageEnhance.Brightness(copy).enhance(rng.uniform(1.03, 1.08))


def _tar_add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def build_planted_pool(
    root: Path,
    shards: int = 3,
    per_shard: int = 24,
    seed: int = 0,
    exact_dups: int = 4,
    near_dups: int = 4,
    contaminants: int = 3,
    eval_images: int = 8,
    min_side: int = 120,
    max_side: int = 420,
) -> PlantedPool:
    rng = np.random.default_rng(seed)
    pool, eval_dir = root / "pool", root / "eval" / "shapes" / "test"
    pool.mkdir(parents=True)
    eval_dir.mkdir(parents=True)

    # Eval images (PNG, as CLIP_benchmark stores them); some get planted into the pool.
    eval_pictures = []
    with tarfile.open(eval_dir / "0.tar", "w") as archive:
        for i in range(eval_images):
            picture, _ = draw_picture(rng, 256, 256)
            buffer = io.BytesIO()
            picture.save(buffer, "PNG")
            _tar_add(archive, f"s{i:04d}.png", buffer.getvalue())
            _tar_add(archive, f"s{i:04d}.cls", b"0")
            eval_pictures.append((f"shapes/test/0.tar:s{i:04d}", picture))

    # Sample contents: unique pictures, then planted copies that reference earlier ones.
    total = shards * per_shard
    samples: list[dict] = []
    for i in range(total - exact_dups - near_dups - contaminants):
        width, height = int(rng.integers(min_side, max_side)), int(rng.integers(min_side, max_side))
        picture, caption = draw_picture(rng, width, height)
        samples.append(
            {
                "jpg": jpeg(picture),
                "text": caption if i % 9 else "img",
                "dup_group": None,
                "eval_name": None,
                "picture": picture,
                "caption": caption,
            }
        )
    for i in range(exact_dups):
        original = samples[2 * i]
        original["dup_group"] = original["dup_group"] or f"exact-{i}"
        samples.append({**original, "text": original["caption"]})
    for i in range(near_dups):
        original = samples[2 * i + 1]
        original["dup_group"] = original["dup_group"] or f"near-{i}"
        copy = near_copy(original["picture"], rng)
        samples.append(
            {
                **original,
                "jpg": jpeg(copy, quality=int(rng.integers(70, 85))),
                "picture": copy,
                "text": original["caption"] + " (copy)",
            }
        )
    for i in range(contaminants):
        name, picture = eval_pictures[i]
        copy = near_copy(picture, rng)
        samples.append(
            {
                "jpg": jpeg(copy, 85),
                "text": "a shapes picture found on the web",
                "dup_group": None,
                "eval_name": name,
                "picture": copy,
                "caption": "",
            }
        )
    order = rng.permutation(len(samples))
    samples = [samples[i] for i in order]
    corrupt = next(s for s in samples if s["dup_group"] is None and s["eval_name"] is None)
    corrupt["jpg"] = corrupt["jpg"][:200]  # a truncated JPEG the scorer cannot decode
    corrupt["corrupt"] = True

    truth: dict[str, list] = {
        k: [] for k in ("uid", "key", "shard", "dup_group", "eval_name", "corrupt", "status")
    }
    for shard in range(shards):
        shard_id = f"{shard:05d}"
        sidecar: dict[str, list] = {
            k: []
            for k in (
                "uid",
                "key",
                "url",
                "text",
                "texts",
                "status",
                "error_message",
                "width",
                "height",
                "original_width",
                "original_height",
                "sha256",
                "host",
            )
        }
        with tarfile.open(pool / f"{shard_id}.tar", "w") as archive:
            chunk = samples[shard * per_shard : (shard + 1) * per_shard]
            for index, sample in enumerate(chunk + [None, None]):
                key = f"{shard_id}{index:04d}"
                url = f"http://127.0.0.1:9/img/{shard_id}/{index}.jpg"
                text = sample["text"] if sample else "a picture that never arrived"
                uid = hashlib.blake2b(f"{url}\t{text}".encode(), digest_size=16).hexdigest()
                status = "success" if sample else "failed_to_download"
                width = height = None
                if sample:
                    width, height = sample["picture"].size
                    _tar_add(archive, f"{key}.jpg", sample["jpg"])
                    _tar_add(archive, f"{key}.txt", text.encode())
                    _tar_add(archive, f"{key}.json", json.dumps({"uid": uid, "key": key}).encode())
                for column, value in (
                    ("uid", uid),
                    ("key", key),
                    ("url", url),
                    ("text", text),
                    ("texts", [text]),
                    ("status", status),
                    ("error_message", None if sample else "http_404"),
                    ("width", width),
                    ("height", height),
                    ("original_width", width),
                    ("original_height", height),
                    ("sha256", hashlib.sha256(sample["jpg"]).hexdigest() if sample else None),
                    ("host", "127.0.0.1"),
                ):
                    sidecar[column].append(value)
                for column, value in (
                    ("uid", uid),
                    ("key", key),
                    ("shard", shard_id),
                    ("dup_group", sample and sample["dup_group"]),
                    ("eval_name", sample and sample["eval_name"]),
                    ("corrupt", bool(sample and sample.get("corrupt"))),
                    ("status", status),
                ):
                    truth[column].append(value)
        table = pa.table(sidecar)
        table = table.set_column(
            table.schema.get_field_index("width"), "width", pa.array(sidecar["width"], pa.int32())
        )
        pq.write_table(table, pool / f"{shard_id}.parquet")
    return PlantedPool(pool, root / "eval", pa.table(truth))


def tiny_model_config() -> Path:
    from curation.stages.score import bundled_config

    return Path(bundled_config("tiny-clip"))


def score_planted_pool(
    planted: PlantedPool,
    weights: Path,
    top_fraction: float | None = None,
    threshold: float | None = None,
    tag: str = "tiny",
    use_ray: bool = True,
) -> str:
    """Run both score passes over the planted pool (Ray must be up), or without Ray in this
    process (tests whose subject is not the scoring: no actor start, which costs seconds; the
    two give the same scores, tests/curation/stages/test_score.py); return the score folder."""
    from curation.stages import score
    from curation.stages.common import RunOptions

    config = score.ScoreConfig(
        str(planted.pool),
        "tiny-clip",
        str(weights),
        tag=tag,
        batch_size=16,
        threshold=threshold,
        top_fraction=top_fraction,
    )
    assert all(
        report.ok for report in score.run(config, RunOptions(use_ray=use_ray, progress=False))
    )
    return config.out


def random_tiny_weights(folder: Path) -> Path:
    from curation.score.model import save_random_weights

    path = folder / "tiny.safetensors"
    save_random_weights("tiny-clip", str(path), str(tiny_model_config()), seed=0)
    return path
