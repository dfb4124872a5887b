"""Images of held-out evaluation sets, for decontamination: WebDataset tars (the CLIP_benchmark
layout: SET/test/*.tar with KEY.jpg|png|webp) and loose image files, found recursively."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from curation.score.pool import iter_tar_members

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
                for key, extension, data in iter_tar_members(str(path)):
                    if extension.lower() in IMAGE_EXTENSIONS:
                        images.append(EvalImage(f"{label}:{key}", data))
            elif path.suffix.lstrip(".").lower() in IMAGE_EXTENSIONS:
                images.append(EvalImage(label, path.read_bytes()))
    return images
