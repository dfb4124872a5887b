"""Training-step throughput: our `tiny` phase-1 step vs open_clip's trainer on the same model size.

Claim (issue 7): on CPU our step, which computes the sigmoid loss *and* the three LocCa decoder
losses and runs Muon, reaches at least open_clip's samples/s for a SigLIP-style model of the same
widths and depths trained with open_clip's own `train_one_epoch` (SigLipLoss, AdamW).

Two measurements, each in alternating rounds within one process to spread machine noise evenly:
- step: both sides train on the same decoded batches (same shards, same batch size) with the
  same thread count; batches are decoded once beforehand, so the numbers compare training steps,
  not JPEG decoding.
- from shards: each trainer reads the same shards through its own data pipeline (ours: the
  resumable loader with LocCa targets and grounding rows; open_clip: its WebDataset pipeline,
  full decode + its train transform) with the same number of loader worker processes, and the
  rate is taken over the steps after a warm-up, loader waits included. This is the number a
  user sees from `python -m training train`.
The default shards are synthetic 256-px JPEGs (the size `make demo` downloads at).
On a CUDA machine it also reports `b16` samples/s per GPU and MFU (bf16 autocast).

    .venv/bin/python benchmarks/train_step.py [--data PATTERN --grounding PATTERN] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch

from training.config import load_args
from training.data.synthetic import write_synthetic_shards
from training.distributed import DistEnv
from training.metrics_log import peak_flops
from training.trainer import Throughput, Trainer, make_loader


def our_trainer(
    preset: str,
    data: str,
    grounding: str,
    batch_size: int,
    device: torch.device,
    overrides: list[str],
) -> tuple[Trainer, list[dict[str, torch.Tensor]]]:
    # Phase 1 only, however many steps are timed (the preset's phase 2 starts at 80% of its steps).
    args = load_args(
        preset,
        [
            f"data.batch_size={batch_size}",
            "data.num_workers=0",
            "schedule.phase2_start=1.0",
            "schedule.phase3_start=1.0",
            "logging.progress_bar=false",
            *overrides,
        ],
    )
    args.data.text_shards, args.data.grounding_shards = data, grounding
    args.resolve()
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    trainer = Trainer(args, env)
    return trainer, make_loader(args, trainer.model_cfg, env, trainer.tokenizer)


def open_clip_model(cfg, vision_pool: str | None = "avg"):
    """An open_clip CustomTextCLIP with our tower sizes (vocabulary and context length included),
    SigLIP's t and b initialisation. `vision_pool`: open_clip's image pooling (None: its default,
    the class token). minicc_quality's open_clip control arm builds its model here too."""
    import open_clip

    vision, text = cfg.vision, cfg.text
    pool = {} if vision_pool is None else {"pool_type": vision_pool}
    return open_clip.CustomTextCLIP(
        embed_dim=cfg.embed_dim,
        vision_cfg={
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "width": vision.width,
            "layers": vision.depth,
            "head_width": vision.width // vision.heads,
            "mlp_ratio": vision.mlp_dim / vision.width,
            **pool,
        },
        text_cfg={
            "context_length": text.context_length,
            "vocab_size": text.vocab_size,
            "width": text.width,
            "heads": text.heads,
            "layers": text.depth,
            "mlp_ratio": text.mlp_dim / text.width,
            "no_causal_mask": True,
            "pool_type": "last",
        },
        init_logit_scale=math.log(10),
        init_logit_bias=-10.0,
        output_dict=True,
    )


class _Batches:
    """The minimal `data['train']` open_clip's train_one_epoch reads."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.dataloader = self

    def __iter__(self):
        return iter(self.batches)

    @property
    def num_batches(self) -> int:
        return len(self.batches)

    @property
    def num_samples(self) -> int:
        return sum(len(images) for images, _ in self.batches)

    def set_epoch(self, epoch: int) -> None:
        pass


def open_clip_trainer_args(
    batch_size: int, grad_clip_norm: float, skip_scheduler: bool, log_every_n_steps: int = 10**9
) -> Namespace:
    """The arguments open_clip_train's `train_one_epoch` reads, for one CPU process in fp32."""
    return Namespace(
        device="cpu",
        precision="fp32",
        distill=False,
        accum_freq=1,
        skip_scheduler=skip_scheduler,
        horovod=False,
        grad_clip_norm=grad_clip_norm,
        batch_size=batch_size,
        world_size=1,
        rank=0,
        local_rank=0,
        log_every_n_steps=log_every_n_steps,
        wandb=False,
        save_logs=False,
        torchscript=False,
    )


def run_open_clip(model, train_data, batch_size: int) -> None:
    """One epoch of open_clip_train's `train_one_epoch` over `train_data` (its `data['train']`)."""
    from open_clip.loss import SigLipLoss
    from open_clip_train.train import train_one_epoch

    args = open_clip_trainer_args(batch_size, grad_clip_norm=1.0, skip_scheduler=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    train_one_epoch(
        model, {"train": train_data}, SigLipLoss(), 0, optimizer, None, None, None, args
    )


def time_open_clip(model, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Samples per CPU-second of this process (see cpu_comparison)."""
    start = time.process_time()
    run_open_clip(model, _Batches(batches), len(batches[0][0]))
    return len(batches) * len(batches[0][0]) / (time.process_time() - start)


def time_ours(trainer: Trainer, batches: list[dict[str, torch.Tensor]]) -> float:
    """Samples per CPU-second of this process (wall seconds on a GPU)."""
    clock = time.perf_counter if trainer.env.device.type == "cuda" else time.process_time
    start = clock()
    for batch in batches:
        trainer.train_step(batch)
    if trainer.env.device.type == "cuda":
        torch.cuda.synchronize()
    return len(batches) * len(batches[0]["image"]) / (clock() - start)


class _ShardBatches:
    """open_clip's `data['train']` over its own WebDataset loader: hands out `limit` batches per
    epoch from one persistent iterator and stamps the time each is handed out, i.e. when the
    previous step ended."""

    def __init__(self, loader, limit: int, batch_size: int) -> None:
        self.iterator, self.limit = iter(loader), limit
        self.dataloader = self
        self.num_batches, self.num_samples = limit, limit * batch_size
        self.stamps: list[float] = []

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        self.stamps = []
        for _ in range(self.limit):
            batch = next(self.iterator)
            self.stamps.append(time.perf_counter())
            yield batch
        self.stamps.append(time.perf_counter())


def steady_rate(stamps: list[float], warm: int, batch_size: int) -> float:
    """Samples/s over the steps after the first `warm` (stamps: one per batch handed out, plus
    the end of the last step)."""
    steps = len(stamps) - 1 - warm
    return steps * batch_size / (stamps[-1] - stamps[warm])


def open_clip_shard_loader(
    data: str, trainer: Trainer, batch_size: int, workers: int, samples: int
):
    """open_clip_train's own WebDataset pipeline over `data`, with its train transform at our
    image size (SigLIP's 0.5 mean/std) and our tokenizer; resampled shards, so it never runs dry."""
    import open_clip
    from open_clip_train.data import get_wds_dataset

    cfg = trainer.model_cfg
    args = Namespace(
        train_data=data,
        train_num_samples=samples,
        train_data_upsampling_factors=None,
        dataset_resampled=True,
        seed=0,
        batch_size=batch_size,
        workers=workers,
        world_size=1,
    )
    preprocess = open_clip.image_transform(
        cfg.vision.image_size, is_train=True, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    tokenizer, length = trainer.tokenizer, cfg.text.context_length
    info = get_wds_dataset(
        args, preprocess, is_train=True, tokenizer=lambda text: tokenizer.encode([text], length)
    )
    return info.dataloader


def time_ours_from_shards(
    trainer: Trainer, loader, steps: int, warm: int, batch_size: int
) -> float:
    stamps = []
    for _ in range(steps):
        batch = next(loader)
        stamps.append(time.perf_counter())
        trainer.train_step(batch)
    stamps.append(time.perf_counter())
    return steady_rate(stamps, warm, batch_size)


def time_open_clip_from_shards(model, batches: _ShardBatches, warm: int, batch_size: int) -> float:
    run_open_clip(model, batches, batch_size)
    return steady_rate(batches.stamps, warm, batch_size)


def shards_comparison(options: argparse.Namespace, data: str, grounding: str) -> None:
    """Both trainers reading the shards through their own pipelines, loader waits included."""
    torch.set_num_threads(options.threads)
    cpu, batch, steps, warm = torch.device("cpu"), options.batch_size, options.shard_steps, 5
    trainer, loader = our_trainer(
        "tiny", data, grounding, batch, cpu, [f"data.num_workers={options.workers}"]
    )
    theirs = open_clip_model(trainer.model_cfg)
    their_batches = _ShardBatches(
        open_clip_shard_loader(
            data, trainer, batch, options.workers, samples=(options.rounds + 1) * steps * batch * 2
        ),
        steps,
        batch,
    )
    runs = {
        "ours": lambda: time_ours_from_shards(trainer, loader, steps, warm, batch),
        "open_clip": lambda: time_open_clip_from_shards(theirs, their_batches, warm, batch),
    }
    for run in runs.values():  # start the workers, fill open_clip's shuffle buffer
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(options.rounds):
        for name, run in runs.items():
            rates[name].append(run())
    ours, reference = (statistics.median(rates[n]) for n in runs)
    print(
        f"from shards: {options.workers} loader worker(s) + {options.threads} training thread(s) "
        f"each, batch {batch}, {steps - warm} timed steps (after {warm} untimed) x {options.rounds} rounds"
    )
    print(f"  ours      (resumable loader, sigmoid + LocCa x3, Muon): {ours:8.1f} samples/s")
    print(f"  open_clip (WebDataset pipeline, SigLipLoss, AdamW)    : {reference:8.1f} samples/s")
    print(f"  ratio ours / open_clip from shards: {ours / reference:.2f}x")


def cpu_comparison(options: argparse.Namespace, data: str, grounding: str) -> dict[str, float]:
    """Our step in four variants and open_clip's, on the same decoded batches, in alternating
    rounds; returns the step ratios. Rates are samples per CPU-second of this process
    (`time.process_time`): with 1 thread that is the rate per core, and other jobs on the box
    cost it far less than they cost a wall-clock rate.

    - reference: ours as trained (sigmoid + LocCa x3, Muon; a quarter of each batch is
      grounding rows, which the text tower and the sigmoid loss skip) vs open_clip's SigLIP step.
    - limit: the same objective on both sides, sigmoid loss only, AdamW, on batches of
      contrastive pairs only (no grounding rows): ours with loss.locca_weight=0 (the decoder is
      not run) and optim.name=adamw, vs open_clip's `train_one_epoch`. Target >= 1.0x.
    - the LocCa decoder's and Muon's cost: as trained, with and without each.
    """
    torch.set_num_threads(options.threads)
    cpu, size = torch.device("cpu"), options.batch_size
    variants = {
        "ours": [],
        "ours_adamw": ["optim.name=adamw"],
        "ours_no_locca": ["loss.locca_weight=0"],
    }
    trainers = {}
    for name, overrides in variants.items():
        trainers[name], loader = our_trainer("tiny", data, grounding, size, cpu, overrides)
    batches = [next(loader) for _ in range(options.steps)]
    same_objective, pairs_loader = our_trainer(
        "tiny", data, "", size, cpu, ["optim.name=adamw", "loss.locca_weight=0"]
    )
    pairs = [next(pairs_loader) for _ in range(options.steps)]
    assert all(bool(b["contrastive"].all()) for b in pairs)
    theirs = open_clip_model(trainers["ours"].model_cfg)
    their_pairs = [(b["image"], b["text"]) for b in pairs]
    runs = {name: (lambda t=t: time_ours(t, batches)) for name, t in trainers.items()}
    runs["ours_sigmoid_adamw"] = lambda: time_ours(same_objective, pairs)
    runs["open_clip"] = lambda: time_open_clip(theirs, their_pairs)
    for trainer in (*trainers.values(), same_objective):  # warm-up: allocator, first calls
        time_ours(trainer, batches[:3] if trainer is not same_objective else pairs[:3])
    time_open_clip(theirs, their_pairs[:3])
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(options.rounds):
        for name, run in runs.items():
            rates[name].append(run())
    rate = {name: statistics.median(values) for name, values in rates.items()}
    ms = {name: 1000 * size / value for name, value in rate.items()}  # CPU ms per step
    grounding_rows = int((~batches[0]["contrastive"]).sum())
    params = sum(p.numel() for p in trainers["ours"].bare_model.parameters())
    their_params = sum(p.numel() for p in theirs.parameters())
    spread = {n: f"{min(v):.0f}-{max(v):.0f}" for n, v in rates.items()}
    print(
        f"tiny on CPU, {options.threads} thread(s), batch {size}, {options.steps} steps x "
        f"{options.rounds} rounds; samples per CPU-second (median, range over rounds)"
    )
    print(
        f"  ours as trained (sigmoid + LocCa x3, Muon; {grounding_rows} grounding rows): "
        f"{rate['ours']:7.1f}  {spread['ours']:>9}  {ms['ours']:6.1f} ms/step "
        f"({params / 1e6:.2f} M params)"
    )
    print(
        f"  ours, AdamW instead of Muon                           : {rate['ours_adamw']:7.1f}  "
        f"{spread['ours_adamw']:>9}  {ms['ours_adamw']:6.1f} ms/step"
    )
    print(
        f"  ours, no LocCa decoder (loss.locca_weight=0)          : "
        f"{rate['ours_no_locca']:7.1f}  {spread['ours_no_locca']:>9}  "
        f"{ms['ours_no_locca']:6.1f} ms/step"
    )
    print(
        f"  ours, sigmoid only + AdamW, contrastive pairs only    : "
        f"{rate['ours_sigmoid_adamw']:7.1f}  {spread['ours_sigmoid_adamw']:>9}  "
        f"{ms['ours_sigmoid_adamw']:6.1f} ms/step"
    )
    print(
        f"  open_clip train_one_epoch (SigLipLoss, AdamW), same pairs: {rate['open_clip']:7.1f}  "
        f"{spread['open_clip']:>9}  {ms['open_clip']:6.1f} ms/step ({their_params / 1e6:.2f} M params)"
    )
    locca_share = (ms["ours"] - ms["ours_no_locca"]) / ms["ours"]
    muon_share = (ms["ours"] - ms["ours_adamw"]) / ms["ours"]
    print(
        f"  share of our step: LocCa decoder {locca_share:.0%} "
        f"({ms['ours'] - ms['ours_no_locca']:.1f} ms), Muon over AdamW {muon_share:.0%} "
        f"({ms['ours'] - ms['ours_adamw']:.1f} ms)"
    )
    result = {
        "vs_reference": rate["ours"] / rate["open_clip"],
        "vs_limit": rate["ours_sigmoid_adamw"] / rate["open_clip"],
        "locca_share": locca_share,
        "muon_share": muon_share,
    }
    print(
        f"  ratio ours as trained / open_clip (reference): {result['vs_reference']:.2f}x; "
        f"ours / limit (same objective as open_clip): {result['vs_limit']:.2f}x "
        f"(target >= 1.0x)"
    )
    return result


def gpu_throughput(options: argparse.Namespace, data: str, grounding: str) -> None:
    device = torch.device("cuda")
    trainer, loader = our_trainer("b16", data, grounding, options.gpu_batch_size, device, [])
    batches = [next(loader) for _ in range(2)]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches] * (options.gpu_steps // 2)
    time_ours(trainer, batches[:4])
    samples_per_s = time_ours(trainer, batches)
    flops = Throughput(trainer.bare_model, trainer.env).flops_per_sample
    name = torch.cuda.get_device_name(device)
    peak = peak_flops(name)
    mfu = f"{samples_per_s * flops / peak:.1%}" if peak else "n/a (unknown peak)"
    print(
        f"b16 on {name}, bf16 autocast, batch {options.gpu_batch_size}: "
        f"{samples_per_s:.0f} samples/s/GPU, MFU {mfu} (target >= 40% on H100)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="image-text shards (default: synthetic shards)")
    parser.add_argument("--grounding", help="grounding shards (default: synthetic shards)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="loader worker processes per trainer in the from-shards comparison",
    )
    parser.add_argument(
        "--shard-steps",
        type=int,
        default=30,
        help="steps per round from shards (the first 5 are not timed; 0 skips that comparison)",
    )
    parser.add_argument("--gpu-batch-size", type=int, default=256)
    parser.add_argument("--gpu-steps", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data, grounding = options.data, options.grounding
        if not (data and grounding):
            world = write_synthetic_shards(
                Path(scratch),
                text_shards=2,
                per_shard=64,
                grounding_per_shard=64,
                image_size=256,
                with_bad_records=False,
            )
            data, grounding = data or world.text_pattern, grounding or world.grounding_pattern
            print(f"data: synthetic shards in {scratch}")
        step = cpu_comparison(options, data, grounding)
        if options.shard_steps:
            shards_comparison(options, data, grounding)
        if torch.cuda.is_available():
            gpu_throughput(options, data, grounding)
        else:
            print("no CUDA device: b16 samples/s/GPU and MFU not measured")
    result = {
        "vs_reference": round(step["vs_reference"], 3),
        "vs_limit": round(step["vs_limit"], 3),
        "target_met": step["vs_limit"] >= 1.0,
        "locca_share": round(step["locca_share"], 3),
        "muon_share": round(step["muon_share"], 3),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
