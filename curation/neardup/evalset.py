"""The eval index (every eval image signed and embedded by the pool's scorer) and the query of a
set of pool rows against it. Eval sets are small, so the index is broadcast to every shard task."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.neardup.rows import aspect_agrees, log_aspect, unit_rows
from curation.score.eval_images import load_eval_images
from curation.score.images import SIGNATURE_DIM, ImageDecodeError, decode_rgb, pixel_signature
from curation.score.model import ScorerSpec
from curation.score.neighbours import nearest, nearest_k


@dataclass(frozen=True)
class MatchRule:
    """When two images (or a pool image and an eval image) are the same picture."""

    threshold: float = 0.95
    eval_threshold: float = 0.95
    pixel_threshold: float = 0.97  # pixel-signature cosine; above 1 disables the signal
    index: str = "auto"
    neighbours: int = 16
    # None: on unless the scorer is untrained (its embeddings all look alike).
    use_embeddings: bool | None = None
    # Pixel matches need |log(aspect_a / aspect_b)| <= this: copies, re-encodes and resizes keep the
    # aspect ratio and 5% crops change it by ~0.05; on the mini Common Crawl, without the gate, 53 of
    # 73 eval "contaminants" were distinct pictures over the same gradient background.
    pixel_aspect_tolerance: float = 0.15

    @property
    def use_pixels(self) -> bool:
        return self.pixel_threshold <= 1


@dataclass
class EvalReference:
    names: list[str]
    sha256: list[str]
    vectors: np.ndarray
    pixels: np.ndarray
    aspect: np.ndarray  # log(width / height)


def embed_eval_sets(folders: list[str], spec: ScorerSpec, batch_size: int = 64) -> EvalReference:
    """Sign and embed every eval image with the pool's scorer (in this process: eval sets are small)."""
    from curation.score.embedder import ClipEmbedder, build_transform

    images = load_eval_images(folders)
    embedder = ClipEmbedder(spec)
    transform = build_transform(embedder.preprocess_cfg())
    names, shas, pixels, signatures, aspects = [], [], [], [], []
    for image in images:
        try:
            decoded = decode_rgb(image.data)
        except ImageDecodeError as exc:
            print(f"neardup: skipping eval image {image.name}: {exc}")
            continue
        names.append(image.name)
        shas.append(image.sha256)
        signatures.append(pixel_signature(decoded))
        aspects.append((decoded.width, decoded.height))
        pixels.append(transform(decoded).numpy())
    vectors = [
        embedder.embed_images(np.stack(pixels[i : i + batch_size]))
        for i in range(0, len(pixels), batch_size)
    ]
    dim = int(embedder.scorer.config["model_cfg"]["embed_dim"])
    return EvalReference(
        names,
        shas,
        unit_rows(np.concatenate(vectors) if vectors else np.zeros((0, dim))),
        unit_rows(np.array(signatures, np.float32).reshape(len(signatures), SIGNATURE_DIM)),
        log_aspect(*np.array(aspects, np.float64).reshape(-1, 2).T),
    )


def match_eval(
    reference: EvalReference,
    rule: MatchRule,
    sha256: list[str | None],
    vectors: np.ndarray,
    scored: np.ndarray,
    signatures: np.ndarray,
    signed: np.ndarray,
    aspect: np.ndarray,
) -> tuple[np.ndarray, list[str | None]]:
    """(contaminated, nearest_eval) per row: a row matches an eval image by embedding cosine
    (rows `scored`, if embeddings are used), else by pixel signature with agreeing aspect ratios
    (rows `signed`), else by identical sha256. Vectors and signatures are unit rows."""
    n = len(sha256)
    nearest_eval: list[str | None] = [None] * n
    contaminated = np.zeros(n, dtype=bool)
    if not len(reference.names):
        return contaminated, nearest_eval
    if rule.use_embeddings and len(scored):
        sims, ids = nearest(vectors[scored], reference.vectors)
        for row, sim, ref in zip(scored, sims, ids):
            if sim >= rule.eval_threshold:
                contaminated[row], nearest_eval[row] = True, reference.names[ref]
    if len(signed):
        pixel_sims, pixel_ids = nearest_k(signatures[signed], reference.pixels, rule.neighbours)
        # [signed, k] neighbours that match: close pixels and agreeing aspect ratios (-1 pads).
        hits = (
            (pixel_sims >= rule.pixel_threshold)
            & (pixel_ids >= 0)
            & aspect_agrees(
                aspect[signed][:, None],
                reference.aspect[np.maximum(pixel_ids, 0)],
                rule.pixel_aspect_tolerance,
            )
        )
        first_hit = pixel_ids[np.arange(len(signed)), hits.argmax(axis=1)]  # best first
        matched = hits.any(axis=1)
        for row, ref in zip(signed[matched], first_hit[matched]):
            if not contaminated[row]:
                contaminated[row], nearest_eval[row] = True, reference.names[ref]
    by_sha = {sha: name for sha, name in zip(reference.sha256, reference.names)}
    for row, sha in enumerate(sha256):
        if sha in by_sha and not contaminated[row]:
            contaminated[row], nearest_eval[row] = True, by_sha[sha]
    return contaminated, nearest_eval
