"""Images of held-out evaluation sets, for decontamination: WebDataset tars (the CLIP_benchmark
layout: SET/test/*.tar with KEY.jpg|png|webp) and loose image files, found recursively. A
truncated eval tar raises: decontamination against part of a set would pass silently."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from training.data.tars import iter_tar_samples

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class EvalImage:
    name: str  # "SET_FOLDER/relative/path:KEY" (tar member) or the relative file path
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def load_eval_images(folders: list[str]) -> list[EvalImage]:
    images: list[EvalImage] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"eval set folder {folder} does not exist")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            label = f"{root.name}/{path.relative_to(root)}"
            if path.suffix == ".tar":
                for sample in iter_tar_samples(str(path)):
                    for extension, data in sample.files.items():
                        if extension in IMAGE_EXTENSIONS:
                            images.append(EvalImage(f"{label}:{sample.key}", data))
            elif path.suffix.lstrip(".").lower() in IMAGE_EXTENSIONS:
                images.append(EvalImage(label, path.read_bytes()))
    return images
