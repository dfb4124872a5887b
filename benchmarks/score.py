"""CLIP scoring throughput: the score stage (shard tasks decoding JPEGs with DCT-domain downscale,
feeding a Ray actor pool) vs a plain single-process open_clip loop (full decode, preprocess,
encode image and text, batch by batch) over the same pool and the same randomly initialised model.

Prints images/s for both, their ratio, and how far the scores differ (the stage decodes JPEGs at
1/2-1/8 scale when that still covers the model's input size, so pixels differ slightly).
On a machine with GPUs the stage runs one actor per GPU and images/s per GPU is printed too.

The limit pass, in the same run on the same images: the model's forward alone (image and text
towers, batch --batch-size, this process's torch threads, i.e. every core) on tensors decoded
and preprocessed beforehand, untimed. Its text tower runs only the positions that reach the
pooled end-of-text token (`curation.score.embedder.encode_text`, the same embeddings): the
padding up to 77 positions is avoidable work, so it is not part of the limit. open_clip's own
forward at full context is timed too and printed beside it. Targets: the stage >= 0.9 of that
limit and >= 2x the plain loop, its time counted from the call that starts its actors to the
last score written.
A third arm runs our scoring pass without Ray in this process and compares its CPU seconds per
image (all threads) with the limit's: `cpu_vs_limit`, the stage's own work against the forward's,
which neither Ray's start nor the box's load moves much (the wall-clock ratios above they do).
The last line is `RESULT {"vs_reference": ..., "vs_limit": ..., "target_met": ...,
"cpu_vs_limit": ...}`.

    .venv/bin/python benchmarks/score.py [--images 240] [--model ViT-S-32] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The planted pool builder writes a pool in the download stage's layout (shared with the tests).
sys.path.insert(0, str(ROOT / "tests" / "curation" / "score"))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
TARGET_VS_LIMIT = 0.9
TARGET_VS_PLAIN = 2.0


def plain_loop(pool: Path, weights: Path, model_name: str, batch_size: int) -> dict[str, float]:
    """The reference: everything in one process, one step after another."""
    import torch

    from curation.score.images import decode_rgb
    from curation.score.model import ScorerSpec, load_scorer
    from curation.score.pool import iter_samples, read_sidecar

    scorer = load_scorer(ScorerSpec(model_name, str(weights)))
    scores: dict[str, float] = {}

    def flush(keys: list[str], images: list, texts: list[str]) -> None:
        with torch.inference_mode():
            image_features = scorer.model.encode_image(torch.stack(images), normalize=True)
            text_features = scorer.model.encode_text(scorer.tokenizer(texts), normalize=True)
        scores.update(zip(keys, (image_features * text_features).sum(-1).tolist()))

    for sidecar in sorted(pool.glob("*.parquet")):
        rows = read_sidecar(str(sidecar), ["key", "text"])
        text_of = dict(zip(rows["key"].to_pylist(), rows["text"].to_pylist()))
        keys, images, texts = [], [], []
        for key, members in iter_samples(str(sidecar.with_suffix(".tar"))):
            try:
                images.append(scorer.preprocess(decode_rgb(members["jpg"])))
            except ValueError:
                continue
            keys.append(key)
            texts.append(text_of[key])
            if len(keys) == batch_size:
                flush(keys, images, texts)
                keys, images, texts = [], [], []
        if keys:
            flush(keys, images, texts)
    return scores


def forward_limit(pool: Path, weights: Path, model_name: str, batch_size: int) -> dict[str, float]:
    """The limit: only the model's forward, on every image decoded and preprocessed up front (as
    the stage preprocesses them), batch by batch; decoding and loading are not timed."""
    import torch

    from curation.score.embedder import ClipEmbedder, build_transform
    from curation.score.images import ImageDecodeError, decode_rgb
    from curation.score.model import ScorerSpec
    from curation.score.pool import iter_samples, read_sidecar

    embedder = ClipEmbedder(ScorerSpec(model_name, str(weights)))
    preprocess_cfg = embedder.preprocess_cfg()
    transform = build_transform(preprocess_cfg)
    pixels, texts = [], []
    for sidecar in sorted(pool.glob("*.parquet")):
        rows = read_sidecar(str(sidecar), ["key", "text"])
        text_of = dict(zip(rows["key"].to_pylist(), rows["text"].to_pylist()))
        for key, members in iter_samples(str(sidecar.with_suffix(".tar"))):
            try:
                image = decode_rgb(members["jpg"], min_side=int(preprocess_cfg["size"]))
            except ImageDecodeError:
                continue
            pixels.append(transform(image).numpy())
            texts.append(text_of[key] or "")
    batches = [
        (np.stack(pixels[i : i + batch_size]), texts[i : i + batch_size])
        for i in range(0, len(pixels), batch_size)
    ]
    model, tokenizer = embedder.scorer.model, embedder.scorer.tokenizer

    def full_context(batch_pixels: np.ndarray, batch_texts: list[str]) -> None:
        with torch.inference_mode():
            model.encode_image(embedder.model_input(batch_pixels), normalize=True)
            model.encode_text(tokenizer(batch_texts), normalize=True)

    result: dict[str, float] = {"images": len(pixels), "threads": torch.get_num_threads()}
    for name, forward in (("", embedder.embed), ("full_context_", full_context)):
        forward(*batches[0])  # warm-up outside the timing (first-call allocations)
        started, cpu_started = time.perf_counter(), time.process_time()
        for batch_pixels, batch_texts in batches:
            forward(batch_pixels, batch_texts)
        result[name + "seconds"] = time.perf_counter() - started
        result[name + "cpu_seconds"] = time.process_time() - cpu_started
    return result


def inprocess_cpu(pool: Path, weights: Path, model_name: str, batch_size: int) -> dict[str, float]:
    """Our stage's scoring pass without Ray, in this process (same shard code: read, decode with
    DCT-domain downscale, preprocess, embed, pixel signatures, write): its CPU seconds, all
    threads, with the pass's own model load (imports and a first load happen untimed). Against the limit's CPU seconds this is the stage's work per
    image, apart from Ray's start and the box's load, which the wall-clock ratio includes."""
    from curation.score.model import ScorerSpec, load_scorer
    from curation.stages.common import RunOptions
    from curation.stages.score import ScoreConfig, score_pass

    load_scorer(ScorerSpec(model_name, str(weights)))  # imports and first load, untimed
    out = pool / "curation" / "score_inprocess"
    started, cpu_started = time.perf_counter(), time.process_time()
    report = score_pass(
        ScoreConfig(
            str(pool), model_name, str(weights), str(out), tag="inprocess", batch_size=batch_size
        ),
        RunOptions(use_ray=False, progress=False),
    )
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if not report.ok:
        raise RuntimeError(report.describe())
    images = sum(not math.isnan(score) for score in stage_scores(pool, out).values())
    return {"images": images, "seconds": seconds, "cpu_seconds": cpu}


def stage_scores(pool: Path, score_dir: Path | None = None) -> dict[str, float]:
    """Key -> clip_score the score stage wrote under `score_dir` (default POOL/curation/score);
    NaN for a sample it could not score."""
    from curation.score.pool import read_sidecar

    raw = (score_dir or pool / "curation" / "score") / "raw"
    scores: dict[str, float] = {}
    for sidecar in sorted(pool.glob("*.parquet")):
        keys = read_sidecar(str(sidecar), ["key"])["key"].to_pylist()  # successes, in order
        table = pq.read_table(raw / sidecar.name)
        scores.update(zip(keys, table["clip_score"].to_pylist()))
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--model", default="ViT-S-32")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import ray
    from planted_pool import build_planted_pool

    from curation.runner import ensure_ray
    from curation.score.model import save_random_weights
    from curation.stages.score import ScoreConfig, bundled_config, score_pass

    with tempfile.TemporaryDirectory(prefix="bench-score-") as folder:
        root = Path(folder)
        per_shard = math.ceil(args.images / args.shards)
        planted = build_planted_pool(
            root, shards=args.shards, per_shard=per_shard, seed=1, min_side=400, max_side=1400
        )
        weights = root / "weights.safetensors"
        save_random_weights(args.model, str(weights), bundled_config(args.model))
        ensure_ray()
        gpus = int(ray.cluster_resources().get("GPU", 0))

        limit = forward_limit(planted.pool, weights, args.model, args.batch_size)
        inprocess = inprocess_cpu(planted.pool, weights, args.model, args.batch_size)

        started = time.perf_counter()
        reference = plain_loop(planted.pool, weights, args.model, args.batch_size)
        plain_seconds = time.perf_counter() - started

        started = time.perf_counter()
        report = score_pass(
            ScoreConfig(
                str(planted.pool),
                args.model,
                str(weights),
                str(planted.pool / "curation" / "score"),
                tag="bench",
                batch_size=args.batch_size,
            )
        )
        stage_seconds = time.perf_counter() - started
        if not report.ok:
            print(report.describe())
            return 1
        ours = stage_scores(planted.pool)

    scored = [k for k in reference if not math.isnan(ours.get(k, math.nan))]
    difference = max(abs(reference[k] - ours[k]) for k in scored)
    plain_rate, stage_rate = len(reference) / plain_seconds, len(scored) / stage_seconds
    limit_rate = limit["images"] / limit["seconds"]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    print(
        f"model {args.model} (random init), {len(reference)} images of 400-1400 px, "
        f"batch {args.batch_size}, {cpus} CPUs, {gpus} GPUs"
    )
    print(
        f"plain single-process open_clip loop: {plain_rate:8.1f} images/s ({plain_seconds:.1f} s)"
    )
    print(
        f"limit: forward only, pre-decoded, {limit['threads']} torch threads: "
        f"{limit_rate:8.1f} images/s ({limit['seconds']:.1f} s)"
    )
    full_rate = limit["images"] / limit["full_context_seconds"]
    print(
        f"  open_clip's forward at full text context: {full_rate:8.1f} images/s "
        f"({limit['full_context_seconds']:.1f} s; the limit is {limit_rate / full_rate:.2f}x it)"
    )
    print(
        f"score stage (Ray actors, incl. start): {stage_rate:8.1f} images/s ({stage_seconds:.1f} s)"
    )
    if gpus:
        print(f"score stage per GPU: {stage_rate / gpus:.1f} images/s")
    limit_cpu = limit["cpu_seconds"] / limit["images"]
    ours_cpu = inprocess["cpu_seconds"] / inprocess["images"]
    cpu_vs_limit = limit_cpu / ours_cpu
    print(
        f"CPU per image (all threads): limit {1000 * limit_cpu:.1f} ms, our scoring pass without "
        f"Ray {1000 * ours_cpu:.1f} ms ({inprocess['images']} images, "
        f"{inprocess['seconds']:.1f} s wall): ours / limit {cpu_vs_limit:.2f}"
    )
    vs_plain, vs_limit = stage_rate / plain_rate, stage_rate / limit_rate
    print(f"ratio stage / plain: {vs_plain:.2f}x (target >= {TARGET_VS_PLAIN:g}x)")
    print(f"ratio stage / limit: {vs_limit:.2f} (target >= {TARGET_VS_LIMIT:g})")
    print(f"max |score difference| (reduced-scale JPEG decode): {difference:.4f}")
    met = vs_plain >= TARGET_VS_PLAIN and vs_limit >= TARGET_VS_LIMIT
    # Three significant digits: a tiny run (actor start dominating) must not print a ratio of 0.
    result = {"vs_reference": float(f"{vs_plain:.3g}"), "vs_limit": float(f"{vs_limit:.3g}")}
    result["target_met"] = met
    result["cpu_vs_limit"] = float(f"{cpu_vs_limit:.3g}")
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
