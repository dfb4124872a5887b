"""GPU readiness in one run (benchmarks/gpu_check.sh): what a lab wants to know before booking
a fleet, measured on one GPU in at most ~8 minutes on an H100.

- b16 training step: samples/s per GPU and MFU (bf16 autocast, LocCa on, the preset's batch of
  256 and its Muon optimizer), eager and with model.compile=true (torch.compile per block);
- so400m: peak GPU memory of a training step with activation checkpointing (the preset's
  default), and without it for comparison (an out-of-memory is reported, not fatal);
- CLIP scoring (the score stage's embedder, fp16 autocast, ViT-B-32): images/s;
- faiss-gpu: flat and IVF index build (vectors/s) and search (queries/s) on 1M × 768 vectors.

Batches are built once from synthetic shards by the real loader and reused, so the numbers are
the GPU's, not the JPEG decoder's. `--dry-run` runs every code path on the CPU at tiny sizes
(tiny preset, a few steps, small indexes); tests/benchmarks/test_gpu_check.py executes it.
Without a GPU and without --dry-run it says so and exits 0 (so `make bench` passes on CPUs).

    benchmarks/gpu_check.sh [--dry-run] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from training.config import load_args  # noqa: E402
from training.data.synthetic import write_synthetic_shards  # noqa: E402
from training.distributed import DistEnv  # noqa: E402
from training.trainer import Throughput, Trainer, make_loader  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """Everything that shrinks for --dry-run."""

    train_preset: str
    memory_preset: str
    train_batch: int | None  # None: the preset's
    memory_batch: int | None
    warmup_steps: int
    timed_steps: int
    scorer: str
    score_batch: int
    score_batches: int
    faiss_vectors: int
    faiss_dim: int
    faiss_lists: int
    faiss_queries: int


GPU = Sizes("b16", "so400m", None, None, 3, 10, "ViT-B-32", 512, 20, 1_000_000, 768, 4096, 10_000)
DRY_RUN = Sizes("tiny", "tiny", 8, 4, 1, 2, "ViT-S-32", 4, 2, 2_000, 32, 16, 100)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_and_batch(preset: str, batch_size: int | None, env: DistEnv, root: Path, **model):
    """A one-process trainer of `preset` and one real batch from synthetic shards."""
    args = load_args(preset, [f"model.{key}={str(value).lower()}" for key, value in model.items()])
    if batch_size:
        args.data.batch_size = batch_size
    args.data.num_workers = 0
    args.schedule.steps = 1000  # phase 1 throughout the measured steps
    args.logging.progress_bar = False
    args.loss.sigmoid_backend = "local"
    if "compile" in model:  # static shapes for the compiled graph (see LossConfig.locca_compact)
        args.loss.locca_compact = False
    image_size = _image_size(args)
    world = write_synthetic_shards(
        root / f"{preset}-{image_size}-{args.data.batch_size}",
        text_shards=2,
        per_shard=args.data.batch_size,
        grounding_per_shard=args.data.grounding_per_batch + 1,
        image_size=image_size,
        with_bad_records=False,
    )
    args.data.text_shards, args.data.grounding_shards = world.text_pattern, world.grounding_pattern
    args.resolve()
    trainer = Trainer(args, env)
    batch = next(make_loader(args, trainer.model_cfg, env, trainer.tokenizer))
    return trainer, {k: v.to(env.device) for k, v in batch.items()}


def _image_size(args) -> int:
    from training.models.config import model_config

    return model_config(args.model.preset, **args.model.overrides).vision.image_size


def train_rate(trainer: Trainer, batch: dict, sizes: Sizes) -> dict[str, float]:
    device = trainer.env.device
    started = time.perf_counter()
    for _ in range(sizes.warmup_steps):  # includes compilation when model.compile is on
        trainer.train_step(batch)
    synchronize(device)
    warmup_s = time.perf_counter() - started
    throughput = Throughput(trainer.bare_model, trainer.env)
    for _ in range(sizes.timed_steps):
        throughput.count(batch)
        trainer.train_step(batch)
    synchronize(device)
    measured = throughput.measure()
    return {
        "samples_per_s_per_gpu": measured["samples_per_s"],
        "mfu": measured.get("mfu", float("nan")),
        "warmup_s": warmup_s,
        "batch": batch["contrastive"].shape[0],
    }


def peak_memory(preset: str, batch: int | None, checkpointing: bool, env, root, sizes) -> dict:
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(env.device)
    try:
        trainer, data = trainer_and_batch(
            preset, batch, env, root, activation_checkpointing=checkpointing
        )
        for _ in range(sizes.timed_steps):
            trainer.train_step(data)
        synchronize(env.device)
    except torch.OutOfMemoryError:
        result = {"peak_gib": float("nan"), "out_of_memory": True}
    else:
        peak = torch.cuda.max_memory_allocated(env.device) if env.device.type == "cuda" else 0
        result = {"peak_gib": peak / 2**30, "out_of_memory": False}
        del trainer, data
    gc.collect()  # free the model (also after an out-of-memory) for the measurements to come
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
    return {**result, "batch": batch or "preset"}


def scoring_rate(sizes: Sizes, root: Path) -> dict[str, float]:
    from curation.score.embedder import ClipEmbedder
    from curation.score.model import ScorerSpec, save_random_weights

    weights = root / f"{sizes.scorer}.safetensors"
    save_random_weights(sizes.scorer, str(weights))
    embedder = ClipEmbedder(ScorerSpec(sizes.scorer, str(weights)))
    side = embedder.scorer.image_size
    pixels = np.random.default_rng(0).standard_normal(
        (sizes.score_batch, 3, side, side), dtype=np.float32
    )
    texts = [f"a photo of object {i}" for i in range(sizes.score_batch)]
    embedder.embed(pixels, texts)  # warm-up: kernels, autotuning
    started = time.perf_counter()
    for _ in range(sizes.score_batches):
        embedder.embed(pixels, texts)  # returns CPU arrays: synchronous
    seconds = time.perf_counter() - started
    return {
        "images_per_s": sizes.score_batch * sizes.score_batches / seconds,
        "model": sizes.scorer,
    }


@contextmanager
def timed(results: dict, key: str):
    started = time.perf_counter()
    yield
    results[key] = time.perf_counter() - started


def faiss_rates(sizes: Sizes) -> dict[str, object]:
    import faiss

    on_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((sizes.faiss_vectors, sizes.faiss_dim), dtype=np.float32)
    faiss.normalize_L2(vectors)
    queries = vectors[: sizes.faiss_queries].copy()
    resources = faiss.StandardGpuResources() if on_gpu else None
    results: dict[str, object] = {"gpu": on_gpu, "vectors": sizes.faiss_vectors}
    for name in ("flat", "ivf"):
        index = faiss.IndexFlatIP(sizes.faiss_dim)
        if name == "ivf":
            index = faiss.IndexIVFFlat(
                index, sizes.faiss_dim, sizes.faiss_lists, faiss.METRIC_INNER_PRODUCT
            )
            index.nprobe = 16
        if on_gpu:
            index = faiss.index_cpu_to_gpu(resources, 0, index)
        seconds: dict[str, float] = {}
        with timed(seconds, "build"):
            if name == "ivf":
                index.train(vectors[: max(sizes.faiss_lists * 40, sizes.faiss_queries)])
            index.add(vectors)
        with timed(seconds, "search"):
            _, found = index.search(queries, 10)
        results[f"{name}_build_vectors_per_s"] = sizes.faiss_vectors / seconds["build"]
        results[f"{name}_search_queries_per_s"] = sizes.faiss_queries / seconds["search"]
        results[f"{name}_self_recall@10"] = float(
            (found == np.arange(sizes.faiss_queries)[:, None]).any(1).mean()
        )
    return results


def run(sizes: Sizes, device: torch.device) -> dict[str, object]:
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    report: dict[str, object] = {"device": _device_name(device), "dry_run": sizes is DRY_RUN}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        for mode, options in (("eager", {}), ("compiled", {"compile": True})):
            trainer, batch = trainer_and_batch(
                sizes.train_preset, sizes.train_batch, env, root, **options
            )
            report[f"{sizes.train_preset}_train_{mode}"] = train_rate(trainer, batch, sizes)
            del trainer, batch
        for checkpointing in (True, False):
            key = f"{sizes.memory_preset}_memory_{'ac' if checkpointing else 'no_ac'}"
            report[key] = peak_memory(
                sizes.memory_preset, sizes.memory_batch, checkpointing, env, root, sizes
            )
        report["clip_scoring"] = scoring_rate(sizes, root)
    report["faiss"] = faiss_rates(sizes)
    return report


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def print_report(report: dict[str, object]) -> None:
    note = " (dry run: tiny sizes on CPU, the numbers mean nothing)" if report["dry_run"] else ""
    print(f"device: {report['device']}{note}")
    for key, value in report.items():
        if key.endswith(("_eager", "_compiled")):
            print(
                f"{key}: {value['samples_per_s_per_gpu']:.1f} samples/s/GPU, "
                f"MFU {100 * value['mfu']:.1f}% (batch {value['batch']}, "
                f"warm-up {value['warmup_s']:.0f} s)"
            )
        elif "_memory_" in key:
            peak = "out of memory" if value["out_of_memory"] else f"{value['peak_gib']:.1f} GiB"
            print(f"{key}: peak {peak} per GPU")
    scoring = report["clip_scoring"]
    print(f"CLIP scoring ({scoring['model']}): {scoring['images_per_s']:.0f} images/s")
    index = report["faiss"]
    print(f"faiss ({'GPU' if index['gpu'] else 'CPU'}, {index['vectors']} vectors):")
    for name in ("flat", "ivf"):
        print(
            f"  {name}: build {index[f'{name}_build_vectors_per_s']:.0f} vectors/s, "
            f"search {index[f'{name}_search_queries_per_s']:.0f} queries/s, "
            f"self-recall@10 {index[f'{name}_self_recall@10']:.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: every code path")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    options = parser.parse_args(argv)
    if not options.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; `benchmarks/gpu_check.sh --dry-run` runs on CPU")
        return 0
    device = torch.device("cpu") if options.dry_run else torch.device("cuda", 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = time.perf_counter()
    report = run(DRY_RUN if options.dry_run else GPU, device)
    report["seconds"] = time.perf_counter() - started
    print_report(report)
    print(f"total {report['seconds']:.0f} s")
    if options.json:
        options.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
