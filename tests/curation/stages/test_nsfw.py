"""The NSFW stage end to end on pictures rendered here: an abstract stand-in for unsafe content
(magenta concentric rings on black), nothing real, among shape pictures on lighter backgrounds;
scored by the project's scorer, fitted on labelled rows, applied to every row, then
`shards --require nsfw`. The scorer here is randomly initialised (no trained weights ship): its
embeddings carry colour and layout rather than meaning, so the stand-in differs in both."""

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parents[1] / "score"))
from planted_pool import random_tiny_weights

from curation.cli import main
from curation.download.shard_writer import SIDECAR_SCHEMA
from curation.nsfw.shards import NO_EMBEDDING, UNSAFE
from curation.stages import nsfw, nsfw_fit, score
from curation.stages.common import ConfigError, RunOptions
from curation.stages.shards import ShardsConfig
from curation.stages.shards import run as run_shards

LOCAL = RunOptions(use_ray=False, progress=False)


def stand_in(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """The planted 'unsafe' concept: magenta concentric rings on a near-black background."""
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 40, 3)))
    draw = ImageDraw.Draw(image)
    ink = (int(rng.integers(200, 256)), int(rng.integers(0, 50)), int(rng.integers(180, 256)))
    cx, cy = rng.uniform(0.3, 0.7) * size[0], rng.uniform(0.3, 0.7) * size[1]
    step = rng.uniform(6, 12)
    for i in range(40, 0, -2):
        r = i * step
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=ink, width=int(step * 0.6) + 1)
    return image


def plain(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Everything else: a few filled shapes on a flat, not dark, background."""
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(80, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.2, 0.8) * size[1]
        r = rng.uniform(0.1, 0.3) * min(size)
        box = (cx - r, cy - r, cx + r, cy + r)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def write_pool(pool: Path, shards: int = 4, per_shard: int = 60, seed: int = 0) -> pa.Table:
    """A pool in the download contract layout, one corrupt JPEG in it; returns uid -> truth."""
    rng = np.random.default_rng(seed)
    pool.mkdir(parents=True)
    truth: dict[str, list] = {"uid": [], "unsafe": []}
    for shard in range(shards):
        shard_id = f"{shard:05d}"
        rows = []
        with tarfile.open(pool / f"{shard_id}.tar", "w") as archive:
            for index in range(per_shard):
                key = f"{shard_id}{index:04d}"
                size = (int(rng.integers(140, 320)), int(rng.integers(140, 320)))
                unsafe = bool(rng.random() < 0.3)
                picture = (stand_in if unsafe else plain)(rng, size)
                buffer = io.BytesIO()
                picture.save(buffer, "JPEG", quality=90)
                data = buffer.getvalue()
                if shard == 0 and index == 0:
                    data = data[:150]  # undecodable: the scorer leaves it unembedded
                url = f"http://127.0.0.1:9/{key}.jpg"
                uid = hashlib.blake2b(url.encode(), digest_size=16).hexdigest()
                for name, member in (("jpg", data), ("txt", b"a picture"), ("json", b"{}")):
                    info = tarfile.TarInfo(f"{key}.{name}")
                    info.size = len(member)
                    archive.addfile(info, io.BytesIO(member))
                rows.append(
                    {
                        "uid": uid,
                        "key": key,
                        "url": url,
                        "text": "a picture",
                        "status": "success",
                        "error_message": None,
                        "width": size[0],
                        "height": size[1],
                        "original_width": size[0],
                        "original_height": size[1],
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                )
                truth["uid"].append(uid)
                truth["unsafe"].append(unsafe)
        pq.write_table(
            pa.Table.from_pylist(rows, schema=SIDECAR_SCHEMA), pool / f"{shard_id}.parquet"
        )
    return pa.table(truth)


@pytest.fixture(scope="module")
def filtered(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsfw")
    pool = root / "pool"
    truth = write_pool(pool)
    weights = random_tiny_weights(root)
    config = score.ScoreConfig(str(pool), "tiny-clip", str(weights), tag="tiny", batch_size=32)
    assert all(r.ok for r in score.run(config, LOCAL))
    # Label the rows of shards 00000-00001 (as a user labels a sample); the rest is held out.
    labelled = truth.slice(0, 120)
    pq.write_table(labelled, root / "labels.parquet")
    head = root / "head.safetensors"
    fit_report = nsfw_fit.run(
        nsfw_fit.NsfwFitConfig(
            str(pool),
            str(root / "labels.parquet"),
            str(head),
            settings=nsfw_fit.FitSettings(holdout=0.0),
        ),
        LOCAL,
    )[-1]
    report = nsfw.run(nsfw.NsfwConfig(str(pool), str(head)), LOCAL)[-1]
    assert report.ok
    return root, pool, truth, head, fit_report, report


def decisions(pool: Path) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(p) for p in sorted((pool / "curation" / "nsfw").glob("*.parquet"))
    )


def test_the_fitted_filter_separates_the_planted_concept_on_held_out_rows(filtered):
    _root, pool, truth, _head, fit_report, _report = filtered
    assert fit_report.summary["labelled_rows"] == 119  # the corrupt image has no embedding
    assert fit_report.summary["labels_not_embedded"] == 1
    table = decisions(pool)
    keep = dict(zip(table["uid"].to_pylist(), table["keep_nsfw"].to_pylist()))
    unsafe = dict(zip(truth["uid"].to_pylist(), truth["unsafe"].to_pylist()))
    held_out = truth["uid"].to_pylist()[120:]
    planted = [uid for uid in held_out if unsafe[uid]]
    safe = [uid for uid in held_out if not unsafe[uid]]
    removed = sum(not keep[uid] for uid in planted) / len(planted)
    false_removal = sum(not keep[uid] for uid in safe) / len(safe)
    assert len(planted) >= 25 and len(safe) >= 60
    # Measured with seed 0: all 35 planted removed, 2 of 85 safe rows (2.4%) removed too. The
    # issue's 2% bar wants a trained scorer (or more labels); this random one carries colour.
    assert removed >= 0.95 and false_removal <= 0.05, (removed, false_removal)


def test_each_dropped_row_says_why_and_the_threshold_is_recorded(filtered):
    _root, pool, _truth, head, _fit, report = filtered
    table = decisions(pool).to_pylist()
    for row in table:
        if row["keep_nsfw"]:
            assert row["nsfw_reason"] is None and row["nsfw_probability"] < 0.5
        elif row["nsfw_reason"] == UNSAFE:
            assert row["nsfw_probability"] >= 0.5
        else:
            assert row["nsfw_reason"] == NO_EMBEDDING and np.isnan(row["nsfw_probability"])
    dropped = report.summary["dropped"]
    assert dropped[NO_EMBEDDING] == 1
    assert dropped[UNSAFE] == sum(r["nsfw_reason"] == UNSAFE for r in table)
    plan = json.loads((pool / "curation" / "nsfw" / "plan.json").read_text())
    assert plan["threshold"] == report.summary["threshold"] == 0.5
    assert plan["weights_sha256"] == hashlib.sha256(head.read_bytes()).hexdigest()
    stats = json.loads((pool / "curation" / "nsfw" / "_stats" / "nsfw" / "00001.json").read_text())
    assert stats["extra"]["threshold"] == 0.5


def test_a_new_threshold_rewrites_the_decisions(filtered):
    root, pool, _truth, head, _fit, _report = filtered
    out = root / "strict"
    report = nsfw.run(nsfw.NsfwConfig(str(pool), str(head), out=str(out), threshold=0.5), LOCAL)
    assert len(report[-1].completed) == 4
    before = pq.read_table(out / "00001.parquet")
    again = nsfw.run(nsfw.NsfwConfig(str(pool), str(head), out=str(out), threshold=0.5), LOCAL)
    assert len(again[-1].completed) == 0 and len(again[-1].skipped) == 4
    strict = nsfw.run(nsfw.NsfwConfig(str(pool), str(head), out=str(out), threshold=1e-6), LOCAL)
    assert len(strict[-1].completed) == 4
    after = pq.read_table(out / "00001.parquet")
    assert before["nsfw_probability"].equals(after["nsfw_probability"])
    assert sum(after["keep_nsfw"].to_pylist()) < sum(before["keep_nsfw"].to_pylist())


def test_shards_require_nsfw_drops_exactly_what_the_filter_marked(filtered):
    root, pool, _truth, _head, _fit, _report = filtered
    config = ShardsConfig(
        str(pool), str(root / "train"), samples_per_shard=64, image_size=64, require=("nsfw",)
    )
    reports = run_shards(config, LOCAL)
    assert all(r.ok for r in reports)
    table = decisions(pool)
    kept = {u for u, k in zip(table["uid"].to_pylist(), table["keep_nsfw"].to_pylist()) if k}
    written = pa.concat_tables(pq.read_table(p) for p in sorted((root / "train").glob("*.parquet")))
    assert set(written["uid"].to_pylist()) == kept
    assert reports[-1].summary["applied"] == ["nsfw"]


def test_shards_default_applies_every_curation_column_the_pool_has(filtered):
    """No --require: shards applies each stage with a keep column that ran (here score and
    nsfw) and names the others as not applied."""
    from curation.stages.shards import DEFAULT_REQUIRE
    from curation.training_samples import KEEP_COLUMNS

    assert set(DEFAULT_REQUIRE) == set(KEEP_COLUMNS)
    root, pool, _truth, _head, _fit, _report = filtered
    train = root / "train-default"
    reports = run_shards(ShardsConfig(str(pool), str(train), 64, image_size=64), LOCAL)
    assert all(r.ok for r in reports)
    summary = reports[-1].summary
    assert summary["applied"] == ["score", "nsfw"]
    assert summary["not_applied"] == ["balance", "neardup", "debias", "langmix"]
    kept = {
        u
        for u, k in zip(
            decisions(pool)["uid"].to_pylist(), decisions(pool)["keep_nsfw"].to_pylist()
        )
        if k
    }
    scored = pa.concat_tables(
        pq.read_table(p) for p in sorted((pool / "curation" / "score").glob("[0-9]*.parquet"))
    )
    kept &= {u for u, k in zip(scored["uid"].to_pylist(), scored["keep_score"].to_pylist()) if k}
    written = pa.concat_tables(pq.read_table(p) for p in sorted(train.glob("*.parquet")))
    assert set(written["uid"].to_pylist()) == kept
    assert summary["removed_by_stage"]["nsfw"] > 0


def test_a_head_fitted_on_another_scorer_is_refused(filtered, tmp_path):
    _root, pool, _truth, head, _fit, _report = filtered
    from curation.nsfw.head import load_head, save_head

    other = load_head(str(head))
    other.spec = type(other.spec)(**{**other.spec.__dict__, "scorer": {"model_name": "ViT-L-14"}})
    save_head(other, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="ViT-L-14"):
        nsfw.run(nsfw.NsfwConfig(str(pool), str(tmp_path / "other.safetensors")), LOCAL)


def test_the_cli_fits_and_applies(filtered, tmp_path):
    root, pool, _truth, _head, _fit, _report = filtered
    head = tmp_path / "cli.safetensors"
    common = ["--no-ray", "--no-progress"]
    assert (
        main(
            ["nsfw-fit", "--pool", str(pool), "--labels", str(root / "labels.parquet")]
            + ["--out", str(head), "--epochs", "50", *common]
        )
        == 0
    )
    out = tmp_path / "decisions"
    argv = ["nsfw", "--pool", str(pool), "--weights", str(head), "--out", str(out), *common]
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "00000.parquet",
        "00001.parquet",
        "00002.parquet",
        "00003.parquet",
    ]
    assert main(["nsfw", "--pool", str(pool), "--weights", str(tmp_path / "none"), *common]) == 2


def test_the_dashboard_counts_the_rows_the_filter_dropped(filtered):
    from curation.dashboard.decisions import build_index
    from curation.dashboard.layout import RunLayout
    from curation.dashboard.pool import PoolTable

    root, pool, _truth, _head, _fit, report = filtered
    index = build_index(PoolTable(RunLayout(str(root))))
    assert "nsfw" in index.applied
    totals = index.totals()
    # The score stage (no rule given) keeps every embedded row, so the unembedded one is
    # "score: not kept" and every row the head marked unsafe is "nsfw: unsafe".
    assert totals["nsfw: unsafe"] == report.summary["dropped"][UNSAFE]
