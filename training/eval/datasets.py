"""Evaluation sets in CLIP_benchmark's WebDataset layout.

    DATASET/classnames.txt                          (classification) one class name per line
    DATASET/zeroshot_classification_templates.txt   (classification) prompts with `{c}`
    DATASET/SPLIT/nshards.txt                       number of shards (optional; else *.tar)
    DATASET/SPLIT/0.tar ...                         KEY.jpg|png|webp + KEY.cls | KEY.txt | KEY.json

A user can point these readers at real ImageNet / COCO / RefCOCO shards in the same layout; the
mini Common Crawl writes its held-out sets this way too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import fsspec

from training.data.tars import RawSample, iter_tar_samples

DEFAULT_TEMPLATES = ("a photo of a {c}.",)


def split_shards(dataset: str, split: str = "test") -> list[str]:
    """Shard URLs of one split, in order; URLs keep the dataset's scheme (s3://, http://)."""
    base = f"{dataset.rstrip('/')}/{split}"
    fs, root = fsspec.core.url_to_fs(base)
    count_file = f"{root}/nshards.txt"
    if fs.exists(count_file):
        names = [f"{index}.tar" for index in range(int(fs.cat_file(count_file).decode().strip()))]
    else:
        names = sorted(posixpath.basename(path) for path in fs.glob(f"{root}/*.tar"))
    if not names:
        raise FileNotFoundError(f"no shards in {base}")
    return [f"{base}/{name}" for name in names]


def iter_split(dataset: str, split: str = "test") -> Iterator[RawSample]:
    for shard in split_shards(dataset, split):
        yield from iter_tar_samples(shard)


def read_lines(url: str) -> list[str]:
    with fsspec.open(url, "rt") as handle:
        return [line.strip() for line in handle if line.strip()]


def classnames_and_templates(dataset: str) -> tuple[list[str], list[str]]:
    classnames = read_lines(f"{dataset.rstrip('/')}/classnames.txt")
    templates_url = f"{dataset.rstrip('/')}/zeroshot_classification_templates.txt"
    fs, path = fsspec.core.url_to_fs(templates_url)
    templates = read_lines(templates_url) if fs.exists(path) else list(DEFAULT_TEMPLATES)
    return classnames, templates
