"""Does phase-1 training learn? `tiny` on the mini Common Crawl beside an open_clip control.

Claims (issues 7 and 22): `tiny`, trained for a fixed budget, reaches zero-shot shape
classification far above chance and ARef Acc@0.5 above trivial boxes (whole image; a centred box
of the mean true size), on the world's held-out eval sets; and it reaches at least the open_clip
control on zero-shot and retrieval at equal steps. The control (`--arms open_clip`) is
open_clip_train's own `train_one_epoch` with SigLipLoss, AdamW and its cosine schedule, on an
open_clip CustomTextCLIP of `tiny`'s widths, depths, heads, patch size and context, fed the same
image-text pairs (decoded and tokenized as ours) for the same steps at our contrastive batch
(batch less grounding rows); it is scored by the same eval code through `OpenClipForEval`. A
control far above chance is the test that the world is learnable at all. `--seeds N` runs every
arm with seeds 0..N-1 and prints mean ± sd. Muon and AdamW (`--arms muon,adamw`) get the same
data, steps and lr (Muon scales its update to AdamW's RMS, so one lr serves both).

Measured on generator 3's small world (2026-12-06, 2 heavily shared CPU cores, one seed): see
the README's benchmark table. Generator 4 (kind textures; small world, seed 0, 1000 steps,
`--probe-pictures 0`, load ~8 on 2 cores): Muon zero-shot 9.1%, T→I R@1 4.7%, I→T 4.9%,
k-NN@10 13.9%, ARef 36.9% (4.6 min); open_clip control zero-shot 8.7%, T→I 5.2%, I→T 6.0%,
k-NN@10 14.7% (8.1 min); chance 8.3%. The texture lifts k-NN (generator 3: 10.4% / 9.8%) but
zero-shot stays at chance in both: the caption losses at batch 24 x 1000 steps still do not
tie the kind word to the picture, although a supervised head on this tower reads the textured
kind at 60% in 800 steps (kind_supervised.py). Tried and not kept: English good captions that
always name the kind but the colour only 70% of the time and size and background 50% (drawn per
scene; the retrieval eval's captions kept in full): Muon zero-shot 8.7%, T→I R@1 1.9%, I→T
1.8%, k-NN@10 13.8%, ARef 39.6% on that world (9.7 min, same settings). Everything below up to `--fresh` was measured on generator 2.

Image-text shards come from `--text-shards` (curation's output). By default they are derived
from the world's grounding shards: each image captioned with the world's good caption of that
picture (from its truth table), or, for a world without one, its phrases joined by "and". The
output says which source was used. The concepts keep the web's Zipf skew (no balancing here).
Grounding rows carry the world's referring expressions ("the red star at the top left"), the
same kind of phrase as the refexp eval set's, as in RefCOCO.

Besides zero-shot, two columns ask whether the image embeddings hold the shape kind at all,
text aside: leave-one-out k-NN on the zero-shot set, and a linear probe (logistic regression)
fitted on 4,000 labelled single-shape pictures from a stream of their own and scored on the
zero-shot set.

Generator 2, on 2 shared CPU cores: ARef was far above the trivial boxes and retrieval
far above chance; zero-shot shape classification stays near chance, and so does k-NN, while
the probe reads the kind only weakly (16% after Muon, 10% after AdamW; chance 8.4%): the image
tower encodes colour, size and position, hardly the shape kind. More data and steps do not
change that (medium world, 21k pictures, batch 128 x 1500 steps: retrieval R@1 62%, ARef 53%,
k-NN 9.3%, zero-shot 10.5%; batch 32 x 20,000 steps, until the sigmoid loss reads 0.000:
zero-shot 10.8%, probe 11.2%), and neither does memorisation explain it: `--fresh 200000
--steps 6000`, where no step sees a picture twice, gives R@1 66%, ARef 56%, zero-shot 12.8%,
probe 10.8%. The kind is in the 64-px pixels: benchmarks/kind_supervised.py trains a small CNN
on the kind labels to 88% in 1000 steps, and the same ViT tower to 27% (AdamW, 3000 steps) or
41% (Muon, 4000 steps, fitting its 8,000 pictures to 85%). A caption names the kind once among
five attributes, and colour, size, position and background already tell a batch's pictures
apart; the caption losses do not make this tower learn the kind within CPU budgets.

`--fresh N` renders N pictures drawn like the web's (the world's concept sampler, so the same
Zipf skew) into OUT/fresh-N, with their good captions and grounding refs; 200,000 take ~8 min
and 2.3 GB.
`--scale medium` builds a world with 10x the pictures (~17 min, once).

    .venv/bin/python benchmarks/minicc_quality.py --world /tmp/minicc --seeds 3 \
        [--arms muon,open_clip] [--probe-pictures 0] [--steps 1000 --fresh 200000]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from train_step import open_clip_model, open_clip_trainer_args

from curation.minicc.build import stale_world_reason
from curation.minicc.captions import good_caption
from curation.minicc.evalsets import labelled_shape_picture
from curation.minicc.parallel import ordered_map
from curation.minicc.render import encode, render_scene
from curation.minicc.vocab import KINDS
from curation.minicc.world import ConceptSampler, sample_scene
from training.checkpoint import load_trained_model
from training.config import load_args
from training.data.samples import decode_image
from training.data.shards import expand_shard_urls
from training.data.tars import iter_tar_samples, write_tar
from training.eval.embed import embed_images
from training.eval.grounding import aref_accuracy
from training.eval.knn import knn_accuracy
from training.eval.linear_probe import linear_probe_accuracy
from training.eval.retrieval import retrieval_recall
from training.eval.zeroshot import load_labelled_images, zeroshot_accuracy
from training.metrics_log import read_metrics
from training.models.config import model_config
from training.trainer import make_tokenizer, train

# The labelled single-shape pictures of the probe (and of kind_supervised.py): a stream of their
# own, apart from the world's web and eval sets.
LABELLED_SEED = 20261123
# --fresh: pictures drawn like the web's, from a stream of their own, never shown twice.
FRESH_STREAM = 0xF4E5
FRESH_SHARD_SIZE = 5000


def labelled_pictures(
    count: int, image_size: int, processes: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` labelled single-shape pictures drawn like the zero-shot set, decoded to the model
    input: images [count, 3, S, S], kind labels [count]."""
    pictures = list(
        ordered_map(
            partial(labelled_shape_picture, LABELLED_SEED),
            list(range(count)),
            processes,
            "render labelled pictures",
        )
    )
    return (
        torch.stack([decode_image(jpeg, image_size) for jpeg, _ in pictures]),
        torch.tensor([label for _, label in pictures]),
    )


def kind_probe(model, probe_set: dict[str, torch.Tensor]) -> dict:
    """Linear probe for the shape kind on the frozen image embeddings: fitted on the labelled
    pictures, scored on the world's zero-shot set (`probe_set`, see main)."""
    return linear_probe_accuracy(
        embed_images(model, probe_set["images"]),
        probe_set["labels"],
        embed_images(model, probe_set["test_images"]),
        probe_set["test_labels"],
        len(KINDS),
    )


def ensure_world(world: Path, scale: str = "small") -> None:
    """Build the world unless `world` holds one this code would build (any scale)."""
    reason = stale_world_reason(world)
    if reason is None:
        return
    print(f"{reason}: building the mini Common Crawl in {world} (scale {scale}) ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "curation",
            "minicc",
            "build",
            "--out",
            str(world),
            "--scale",
            scale,
        ],
        check=True,
    )


def world_captions(world: Path) -> dict[str, str]:
    """image_id → the world's good caption of that picture (its truth table), or {} when the
    world has no truth table."""
    truth = world / "truth_images.parquet"
    if not truth.exists():
        return {}
    rows = pq.read_table(truth, columns=["image_id", "good_caption"]).to_pylist()
    return {row["image_id"]: row["good_caption"] for row in rows if row["good_caption"]}


def captions_from_grounding(grounding: str, out_dir: Path, captions: dict[str, str]) -> str:
    """Image-text shards of the grounding images, each captioned with the world's good caption
    of that picture, or (not in `captions`) with its grounding phrases joined by 'and'."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = expand_shard_urls(grounding)
    for index, url in enumerate(shards):
        target = out_dir / f"{index:05d}.tar"
        if target.exists():
            continue
        partial = target.with_suffix(".tar.partial")
        with tarfile.open(partial, "w") as archive:
            for sample in iter_tar_samples(url):
                refs = json.loads(sample.files["json"]).get("refs", [])
                caption = captions.get(sample.key) or " and ".join(
                    ref["phrase"] for ref in refs if ref.get("phrase")
                )
                for name, data in (
                    (f"{sample.key}.jpg", sample.files["jpg"]),
                    (f"{sample.key}.txt", caption.encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        partial.rename(target)
    return str(out_dir / f"{{00000..{len(shards) - 1:05d}}}.tar")


def fresh_picture(
    world_seed: int, concepts: ConceptSampler, long_side: int, index: int
) -> tuple[str, bytes, str, list]:
    """Picture `index` of the --fresh stream: a scene drawn as the world draws its web's (its
    concept sampler, `ConceptSampler(world_seed)`, so the same Zipf skew), rendered, shrunk to
    `long_side` (the trainer squashes to 64 px anyway), with its good English caption and its
    grounding refs."""
    rng = np.random.default_rng([world_seed, FRESH_STREAM, index])
    scene = sample_scene(rng, f"fresh-{index}", concepts)
    rendered = render_scene(scene)
    image = rendered.image
    scale = long_side / max(image.size)
    if scale < 1:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.BILINEAR,
        )
    caption = good_caption(scene)
    return f"{index:08d}", encode(image, "jpeg", 90), caption, scene.grounding_refs(rendered.boxes)


def fresh_shards(
    world: Path, count: int, out_dir: Path, long_side: int = 160, processes: int = 2
) -> tuple[str, str]:
    """Write `count` fresh pictures as image-text shards (KEY.jpg + KEY.txt) and grounding
    shards (KEY.jpg + KEY.json refs) of the same pictures; returns both shard patterns. A
    shard already written is kept (each is written atomically), so an interrupted run resumes."""
    seed = json.loads((world / "world.json").read_text())["seed"]
    picture = partial(fresh_picture, seed, ConceptSampler(seed), long_side)
    shards = (count + FRESH_SHARD_SIZE - 1) // FRESH_SHARD_SIZE
    for shard in range(shards):
        text, grounding = (
            out_dir / "text" / f"{shard:05d}.tar",
            out_dir / "grounding" / f"{shard:05d}.tar",
        )
        if text.exists() and grounding.exists():
            continue
        indices = list(range(shard * FRESH_SHARD_SIZE, min(count, (shard + 1) * FRESH_SHARD_SIZE)))
        rows = list(
            ordered_map(picture, indices, processes, f"fresh pictures, shard {shard + 1}/{shards}")
        )
        write_tar(
            grounding,
            [
                (
                    key,
                    {
                        "jpg": jpeg,
                        "json": json.dumps(
                            {"source": "minicc-fresh", "refs": refs}, sort_keys=True
                        ).encode(),
                    },
                )
                for key, jpeg, _, refs in rows
            ],
        )
        write_tar(
            text, [(key, {"jpg": jpeg, "txt": caption.encode()}) for key, jpeg, caption, _ in rows]
        )
    last = f"{shards - 1:05d}"
    return (
        str(out_dir / "text" / f"{{00000..{last}}}.tar"),
        str(out_dir / "grounding" / f"{{00000..{last}}}.tar"),
    )


def train_and_evaluate(
    name: str,
    text_shards: str,
    grounding: str,
    world: Path,
    out: Path,
    steps: int,
    overrides: list[str],
    probe_set: dict[str, torch.Tensor] | None,
) -> dict:
    # Phase 1 only: the claim is about phase 1 (the preset's phase-2 and phase-3 tails are left
    # out; phase 3 starts at its own fraction, so both are switched off).
    args = load_args(
        "tiny",
        [
            f"schedule.steps={steps}",
            f"checkpoint.every={steps}",
            "schedule.phase2_start=1.0",
            "schedule.phase3_start=1.0",
            "logging.tensorboard=false",
            "logging.progress_bar=false",
            *overrides,
        ],
    )
    args.data.text_shards, args.data.grounding_shards, args.out = text_shards, grounding, str(out)
    started = time.perf_counter()
    folder = train(args)
    minutes = (time.perf_counter() - started) / 60
    model, tokenizer = (
        load_trained_model(folder),
        make_tokenizer(args.model.tokenizer, args.model.box_bins),
    )
    result = {
        "run": name,
        "train_minutes": minutes,
        "final_loss": read_metrics(out / "metrics.jsonl")[-1],
        **evaluate_arm(model, tokenizer, world, probe_set, with_aref=True),
    }
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    return result


class OpenClipForEval(torch.nn.Module):
    """An open_clip model behind the interface our eval code reads (`cfg`, `encode_image`
    returning (embedding, tokens), `encode_text`), so both arms are scored by the same code."""

    def __init__(self, clip: torch.nn.Module, cfg) -> None:
        super().__init__()
        self.clip, self.cfg = clip, cfg

    def encode_image(self, images: torch.Tensor):
        return self.clip.encode_image(images), None

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)


class _ControlBatches:
    """`data['train']` for open_clip_train's `train_one_epoch`: `steps` batches of (images,
    tokens) drawn from the image-text shards, reshuffled (seeded) at each pass over them."""

    def __init__(
        self, images: torch.Tensor, tokens: torch.Tensor, batch: int, steps: int, seed: int
    ):
        self.images, self.tokens, self.batch, self.seed = images, tokens, batch, seed
        self.num_batches, self.num_samples = steps, steps * batch
        self.dataloader = self

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.empty(0, dtype=torch.long)
        for _ in range(self.num_batches):
            if len(order) < self.batch:
                order = torch.cat([order, torch.randperm(len(self.images), generator=generator)])
            take, order = order[: self.batch], order[self.batch :]
            yield self.images[take], self.tokens[take]


def control_data(text_shards: str, image_size: int, tokenizer, length: int):
    """Every image-text pair of the shards, decoded as our trainer and eval decode them (square
    resize, [-1, 1]) and tokenized by the same tokenizer."""
    images, texts = [], []
    for url in expand_shard_urls(text_shards):
        for sample in iter_tar_samples(url):
            images.append(decode_image(sample.files["jpg"], image_size))
            texts.append(sample.files["txt"].decode())
    return torch.stack(images), tokenizer.encode(texts, length)


def train_open_clip_control(
    args, text_shards: str, steps: int, seed: int, lr: float
) -> tuple[torch.nn.Module, object, float]:
    """The control arm: open_clip_train's `train_one_epoch` with SigLipLoss, AdamW and its
    cosine schedule (warmup as ours), for `steps` batches of the contrastive batch our trainer
    uses (its batch size less the grounding rows). Returns the model (eval interface), the
    tokenizer and the training minutes."""
    from open_clip.loss import SigLipLoss
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    torch.manual_seed(seed)
    cfg = model_config(args.model.preset, **args.model.overrides)
    tokenizer = make_tokenizer(args.model.tokenizer, args.model.box_bins)
    images, tokens = control_data(
        text_shards, cfg.vision.image_size, tokenizer, cfg.text.context_length
    )
    batch = round(args.data.batch_size * (1 - args.data.grounding_fraction))
    # open_clip's CustomTextCLIP at tiny's sizes, its default (class-token) image pooling.
    model = open_clip_model(cfg, vision_pool=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.optim.weight_decay)
    scheduler = cosine_lr(optimizer, lr, args.optim.warmup_steps, steps)
    trainer_args = open_clip_trainer_args(
        batch, args.grad_clip_norm, skip_scheduler=False, log_every_n_steps=max(1, steps // 5)
    )
    started = time.perf_counter()
    model.train()
    train_one_epoch(
        model,
        {"train": _ControlBatches(images, tokens, batch, steps, seed)},
        SigLipLoss(),
        0,
        optimizer,
        None,
        scheduler,
        None,
        trainer_args,
    )
    minutes = (time.perf_counter() - started) / 60
    return OpenClipForEval(model.eval(), cfg), tokenizer, minutes


def evaluate_arm(model, tokenizer, world: Path, probe_set: dict | None, with_aref: bool) -> dict:
    """The same eval code for every arm (ARef only where the model has a LocCa decoder)."""
    evals = world / "eval"
    with torch.no_grad():
        result = {
            "zeroshot": zeroshot_accuracy(model, tokenizer, str(evals / "zeroshot")),
            "retrieval": retrieval_recall(model, tokenizer, str(evals / "retrieval")),
            # Do the image embeddings separate the shape kinds at all, text aside?
            "knn": knn_accuracy(model, str(evals / "zeroshot")),
        }
        if with_aref:
            result["aref"] = aref_accuracy(model, tokenizer, str(evals / "refexp"))
        if probe_set is not None:
            # ... and can a linear probe read the kind off them?
            result["probe"] = kind_probe(model, probe_set)
    return result


# (column, how to read it off a run's result); None where the arm has no such eval.
COLUMNS: tuple[tuple[str, object], ...] = (
    ("0-shot", lambda r: r["zeroshot"]["top1"]),
    ("T→I R@1", lambda r: r["retrieval"]["text_to_image_R@1"]),
    ("I→T R@1", lambda r: r["retrieval"]["image_to_text_R@1"]),
    ("kNN@10", lambda r: r["knn"]["top1@k10"]),
    ("ARef@.5", lambda r: r["aref"]["acc@0.5"] if "aref" in r else None),
    ("probe", lambda r: r["probe"]["top1"] if "probe" in r else None),
)


def _cell(value: float | None) -> str:
    return f"{value:>9.1%}" if value is not None else f"{'-':>9}"


def print_table(results: list[dict], steps: int, batch: str) -> None:
    """Every run, then each arm's mean ± sd over its seeds."""
    print(f"\ntiny, {steps} steps, {batch}; evaluated on the world's held-out sets")
    header = f"{'run':18} {'min':>5} " + " ".join(f"{name:>9}" for name, _ in COLUMNS)
    print(header)
    print("-" * len(header))
    for r in results:
        cells = " ".join(_cell(read(r)) for _, read in COLUMNS)
        print(f"{r['run']:18} {r['train_minutes']:5.1f} {cells}")
    chance = results[0]["zeroshot"]["chance"]
    print(f"zero-shot chance (majority class): {chance:.1%}")
    arms = list(dict.fromkeys(r["arm"] for r in results))
    print("\nmean ± sd over seeds (n = seeds)")
    print(f"{'arm':12} {'n':>2} " + " ".join(f"{name:>15}" for name, _ in COLUMNS))
    for arm in arms:
        runs = [r for r in results if r["arm"] == arm]
        cells = []
        for _, read in COLUMNS:
            values = [read(r) for r in runs]
            if any(v is None for v in values):
                cells.append(f"{'-':>15}")
                continue
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            cells.append(f"{np.mean(values):>8.1%} ± {sd:4.1%}")
        print(f"{arm:12} {len(runs):>2} " + " ".join(cells))


def run_arm(arm: str, seed: int, options, text_shards: str, grounding: str, probe_set) -> dict:
    out = options.out / f"{arm}-s{seed}"
    if arm == "open_clip":
        args = load_args("tiny", options.overrides)
        model, tokenizer, minutes = train_open_clip_control(
            args, text_shards, options.steps, seed, options.control_lr
        )
        result = {
            "train_minutes": minutes,
            **evaluate_arm(model, tokenizer, options.world, probe_set, with_aref=False),
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=1))
    else:
        result = train_and_evaluate(
            arm,
            text_shards,
            grounding,
            options.world,
            out,
            options.steps,
            [f"optim.name={arm}", f"seed={seed}", *options.overrides],
            probe_set,
        )
    return {**result, "run": f"{arm} seed {seed}", "arm": arm, "seed": seed}


def main() -> None:
    if "--ablation" in sys.argv:  # the phase 1 / +SILC,TIPS / +Gram,KoLeo / +NaFlex ablation
        sys.argv.remove("--ablation")
        import phase_ablation

        phase_ablation.main()
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="--ablation: run benchmarks/phase_ablation.py instead "
        "(same --world/--text-shards/--steps/--out flags)",
    )
    parser.add_argument(
        "--world",
        type=Path,
        default=Path("/tmp/minicc-quality"),
        help="mini Common Crawl folder (built at --scale if missing)",
    )
    parser.add_argument(
        "--scale",
        default="small",
        choices=("small", "medium"),
        help="world size when --world must be built (medium: 10x the pictures)",
    )
    parser.add_argument("--text-shards", help="image-text shards (default: derived from grounding)")
    parser.add_argument(
        "--fresh",
        type=int,
        metavar="N",
        help="train on N pictures drawn like the web's that no step sees twice "
        "(rendered into OUT/fresh-N), instead of the world's pictures",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/minicc_quality"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--arms",
        default="muon,open_clip",
        help="comma list: muon, adamw (ours, with that optimizer), open_clip (the control: "
        "open_clip_train's train_one_epoch, SigLipLoss, AdamW, the same widths, data, steps)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per arm (0..N-1)")
    parser.add_argument(
        "--control-lr", type=float, default=1e-3, help="the open_clip control's AdamW lr"
    )
    parser.add_argument(
        "--probe-pictures",
        type=int,
        default=4000,
        help="labelled pictures the kind probe is fitted on (0: no probe)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides for both runs (key=value)")
    options = parser.parse_args()

    if options.fresh is not None and options.fresh < 1:
        parser.error(f"--fresh takes a number of pictures >= 1, got {options.fresh}")
    if options.fresh and options.text_shards:
        parser.error("--fresh renders its own image-text shards: leave out --text-shards")

    ensure_world(options.world, options.scale)
    grounding = str(options.world / "grounding" / "*.tar")
    if options.fresh:
        text_shards, grounding = fresh_shards(
            options.world, options.fresh, options.out / f"fresh-{options.fresh}"
        )
        print(
            f"image-text and grounding shards: {options.fresh} fresh pictures drawn like the "
            f"web's, captioned with their good captions ({text_shards})"
        )
    elif options.text_shards:
        text_shards = options.text_shards
        print(f"image-text shards: {text_shards}")
    else:
        captions = world_captions(options.world)
        folder = options.out / ("captions_good" if captions else "captions_phrases")
        text_shards = captions_from_grounding(grounding, folder, captions)
        source = "the world's good captions" if captions else "their own phrases"
        print(
            "image-text shards: NOT curated web data; the world's grounding images captioned "
            f"with {source} ({text_shards})"
        )
    args = load_args("tiny", options.overrides)
    image_size = model_config(args.model.preset, **args.model.overrides).vision.image_size
    probe_set = None
    if options.probe_pictures:
        # Rendered and decoded once, for every arm's runs.
        images, labels = labelled_pictures(options.probe_pictures, image_size)
        test_images, test_labels = load_labelled_images(
            str(options.world / "eval" / "zeroshot"), image_size
        )
        probe_set = {
            "images": images,
            "labels": labels,
            "test_images": test_images,
            "test_labels": test_labels,
        }
    results = []
    for seed in range(options.seeds):
        for arm in options.arms.split(","):
            print(f"\n== {arm}, seed {seed} ==", flush=True)
            results.append(run_arm(arm, seed, options, text_shards, grounding, probe_set))
    print_table(
        results,
        options.steps,
        f"batch {args.data.batch_size} ({args.data.grounding_fraction:.0%} grounding)",
    )


if __name__ == "__main__":
    main()
