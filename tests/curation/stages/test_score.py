import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "score"))
from planted_pool import build_planted_pool, random_tiny_weights, score_planted_pool

from curation import fsio
from curation.cli import main
from curation.fsio import PlanMismatchError
from curation.score.embedder import ClipEmbedder, build_transform, cosine_rows
from curation.score.images import decode_rgb
from curation.score.model import ScorerSpec
from curation.score.pool import iter_samples, read_sidecar
from curation.stages.common import ConfigError, RunOptions
from curation.stages.score import ScoreConfig, decide, filter_pass, score_pass
from curation.stats import read_stage_records


@pytest.fixture(scope="module")
def scored(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("score")
    planted = build_planted_pool(root)
    weights = random_tiny_weights(root)
    out = score_planted_pool(planted, weights, top_fraction=0.25)
    return planted, weights, out


def read(path) -> "pq.Table":
    return pq.read_table(str(path))


def test_every_decodable_sample_is_scored_and_the_corrupt_one_is_counted(scored):
    planted, _weights, out = scored
    truth = planted.truth.to_pandas()
    successes = truth[truth.status == "success"]
    rows = {}
    for shard in ("00000", "00001", "00002"):
        table = read(Path(out) / f"{shard}.parquet")
        embeddings = np.load(Path(out) / f"{shard}.emb.npy")
        assert embeddings.shape == (table.num_rows, 64) and embeddings.dtype == np.float16
        rows.update(zip(table["uid"].to_pylist(), table["clip_score_tiny"].to_pylist()))
    assert set(rows) == set(successes.uid)  # failed downloads are not scored
    corrupt = set(successes[successes.corrupt].uid)
    assert {uid for uid, score in rows.items() if math.isnan(score)} == corrupt
    records = read_stage_records(out, "score")
    assert sum(r["errors"].get("undecodable_image", 0) for r in records) == len(corrupt) == 1


def test_actor_scores_equal_a_plain_in_process_loop(scored):
    planted, weights, out = scored
    embedder = ClipEmbedder(ScorerSpec("tiny-clip", str(weights)))
    config = embedder.preprocess_cfg()
    transform = build_transform(config)
    sidecar = read_sidecar(str(planted.pool / "00001.parquet"), ["uid", "key", "text"])
    texts = dict(zip(sidecar["key"].to_pylist(), sidecar["text"].to_pylist()))
    keys, pixels = [], []
    for key, members in iter_samples(str(planted.pool / "00001.tar")):
        pixels.append(transform(decode_rgb(members["jpg"], min_side=config["size"])).numpy())
        keys.append(key)
    images, captions = embedder.embed(np.stack(pixels), [texts[k] for k in keys])
    expected = dict(zip(keys, cosine_rows(images, captions)))
    table = read(Path(out) / "00001.parquet")
    got = dict(zip(sidecar["key"].to_pylist(), table["clip_score_tiny"].to_pylist()))
    assert set(expected) == set(got)
    assert max(abs(expected[k] - got[k]) for k in keys) < 1e-4


def test_top_fraction_is_global_and_a_new_rule_rewrites_only_the_keep_pass(scored):
    planted, weights, out = scored
    tables = [read(Path(out) / f"{s}.parquet") for s in ("00000", "00001", "00002")]
    scores = np.concatenate([t["clip_score_tiny"].to_numpy(zero_copy_only=False) for t in tables])
    kept = sum(
        int(np.count_nonzero(t["keep_score"].to_numpy(zero_copy_only=False))) for t in tables
    )
    finite = scores[np.isfinite(scores)]
    assert kept == math.ceil(0.25 * finite.size)
    assert fsio.read_json(f"{out}/thresholds.json")["quantile"]["method"] == "exact"

    embeddings_before = (Path(out) / "00000.emb.npy").stat().st_mtime_ns
    threshold = float(np.median(finite))
    config = ScoreConfig(str(planted.pool), "tiny-clip", str(weights), out, threshold=threshold)
    decision, _ = decide(config)
    report = filter_pass(config, decision)
    assert sorted(r["shard"] for r in report.completed) == ["00000", "00001", "00002"]
    again = filter_pass(config, decision)
    assert again.skipped == ["00000", "00001", "00002"] and not again.completed
    keep = np.concatenate(
        [
            read(Path(out) / f"{s}.parquet")["keep_score"].to_numpy(zero_copy_only=False)
            for s in ("00000", "00001", "00002")
        ]
    )
    with np.errstate(invalid="ignore"):
        assert np.array_equal(keep, scores >= threshold)
    assert (Path(out) / "00000.emb.npy").stat().st_mtime_ns == embeddings_before


def test_a_rescored_shard_after_a_lost_marker_is_byte_identical(scored):
    planted, weights, out = scored
    raw = Path(out) / "raw" / "00002.parquet"
    before = raw.read_bytes(), (Path(out) / "00002.emb.npy").read_bytes()
    (Path(out) / "_stats" / "score" / "00002.json").unlink()
    raw.unlink()
    report = score_pass(
        ScoreConfig(str(planted.pool), "tiny-clip", str(weights), out, tag="tiny", batch_size=16)
    )
    assert [r["shard"] for r in report.completed] == ["00002"]
    assert (raw.read_bytes(), (Path(out) / "00002.emb.npy").read_bytes()) == before


def test_cli_announces_random_weights_and_basic_rules_drop_short_captions(scored, capsys):
    planted, weights, out = scored
    code = main(
        [
            "score",
            "--pool",
            str(planted.pool),
            "--model",
            "tiny-clip",
            "--weights",
            str(weights),
            "--tag",
            "tiny",
            "--basic-filter",
            "--min-side",
            "100",
        ]
    )
    assert code == 0
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out
    drops = {}
    for record in read_stage_records(out, "score_filter"):
        for reason, count in record["drops"].items():
            drops[reason] = drops.get(reason, 0) + count
    short_scored_captions = 0
    for shard in ("00000", "00001", "00002"):
        text = read_sidecar(str(planted.pool / f"{shard}.parquet"), ["text"])["text"].to_pylist()
        scores = read(Path(out) / f"{shard}.parquet")["clip_score_tiny"].to_pylist()
        short_scored_captions += sum(
            1 for t, s in zip(text, scores) if len(t.split()) < 3 and not math.isnan(s)
        )
    # Unscored rows are counted under "unscored" first; every other short caption is dropped.
    assert drops["basic_caption_words"] == short_scored_captions > 0


def test_scores_of_another_model_in_the_same_folder_are_refused(scored):
    planted, weights, out = scored
    with pytest.raises(PlanMismatchError, match="holds scores from"):
        score_pass(ScoreConfig(str(planted.pool), "tiny-clip", str(weights), out, tag="other"))


def test_no_ray_scores_in_process_the_same_as_the_actor_pool(scored, tmp_path):
    planted, weights, out = scored
    config = ScoreConfig(
        str(planted.pool), "tiny-clip", str(weights), str(tmp_path), tag="tiny", batch_size=16
    )
    report = score_pass(config, RunOptions(use_ray=False, progress=False))
    assert report.ok and len(report.completed) == 3
    for shard in ("00000", "00001", "00002"):
        local = read(tmp_path / "raw" / f"{shard}.parquet")["clip_score"].to_numpy(
            zero_copy_only=False
        )
        actors = read(Path(out) / "raw" / f"{shard}.parquet")["clip_score"].to_numpy(
            zero_copy_only=False
        )
        assert np.allclose(local, actors, atol=1e-5, equal_nan=True)


def test_bad_settings_exit_2_before_any_model_loads(tmp_path, capsys):
    base = ["score", "--pool", str(tmp_path), "--model", "tiny-clip"]
    assert main(base) == 2
    assert "--weights are required" in capsys.readouterr().err
    assert main([*base, "--weights", "w", "--top-fraction", "1.5"]) == 2
    # The stage's own "score:" prefix is said once, not again by the CLI.
    assert capsys.readouterr().err.startswith("score: --top-fraction must be in (0, 1]")


def test_cli_creates_random_tiny_weights_from_the_bundled_config(tmp_path, capsys):
    from curation.score.model import weights_are_random

    path = tmp_path / "tiny.safetensors"
    assert main(["score", "--init-random-weights", str(path), "--model", "tiny-clip"]) == 0
    assert "randomly initialised tiny-clip" in capsys.readouterr().out
    assert weights_are_random(str(path))


def test_weights_that_do_not_fit_stop_the_stage_with_one_clear_error(scored, tmp_path):
    # Shard tasks start before the actors have built the model; an actor that cannot build it
    # fails the shards that call it, and the stage stops with its cause, naming the weights.
    import torch
    from planted_pool import tiny_model_config

    planted, _weights, _out = scored
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"visual.nothing": torch.zeros(1)}}, wrong)
    config = ScoreConfig(
        str(planted.pool),
        "tiny-clip",
        str(wrong),
        str(tmp_path / "out"),
        model_config=str(tiny_model_config()),
    )
    with pytest.raises(ConfigError, match="could not build its model: ScorerConfigError") as exc:
        score_pass(config, RunOptions(progress=False))
    assert f"weights {wrong} do not fit model 'tiny-clip'" in str(exc.value)
    assert "\n" not in str(exc.value)  # one line, not Ray's traceback
    # Each shard that called the dead actor recorded the same one line, and a re-run retries it.
    failures = list((tmp_path / "out" / "_errors" / "score").glob("*.json"))
    assert failures and all("could not build its model" in f.read_text() for f in failures)
    # A model no config describes fails in the driver (which stops the actors it started).
    with pytest.raises(ConfigError, match="not an open_clip architecture"):
        score_pass(ScoreConfig(str(planted.pool), "no-such-model", str(wrong), str(tmp_path / "x")))


def test_cross_fitting_scores_each_row_with_its_folds_model(scored, tmp_path):
    """--fold-weights W0 W1: a row of fold i gets exactly what model i alone gives it (score and
    embedding), on the actor pool as in process; stages that read one model's embeddings refuse
    the folder."""
    from planted_pool import tiny_model_config

    from curation.score.model import save_random_weights
    from curation.score.shard_scoring import crossfit_folds
    from curation.stages.score import read_scorer_record

    planted, weights, out = scored
    other = tmp_path / "other.safetensors"
    save_random_weights("tiny-clip", str(other), str(tiny_model_config()), seed=1)
    alone = tmp_path / "other_alone"
    local = RunOptions(use_ray=False, progress=False)
    common = dict(pool=str(planted.pool), model="tiny-clip", tag="tiny", batch_size=16)
    assert score_pass(ScoreConfig(weights=str(other), out=str(alone), **common), local).ok
    crossfit = ScoreConfig(
        weights="",
        out=str(tmp_path / "crossfit"),
        fold_weights=(str(weights), str(other)),
        fold_seed=3,
        **common,
    )
    assert score_pass(crossfit, RunOptions(progress=False)).ok  # on the session's Ray
    singles = (Path(out), alone)
    both_folds = set()
    for shard in ("00000", "00001", "00002"):
        got = read(tmp_path / "crossfit" / "raw" / f"{shard}.parquet")
        folds = crossfit_folds(got["uid"].to_pylist(), 2, 3)
        both_folds |= set(folds.tolist())
        for fold, single in enumerate(singles):
            expected = read(single / "raw" / f"{shard}.parquet")
            assert expected["uid"] == got["uid"]
            mine = folds == fold
            assert np.allclose(
                got["clip_score"].to_numpy(zero_copy_only=False)[mine],
                expected["clip_score"].to_numpy(zero_copy_only=False)[mine],
                atol=1e-5,
                equal_nan=True,
            )
            assert np.allclose(
                np.load(tmp_path / "crossfit" / f"{shard}.emb.npy")[mine],
                np.load(single / f"{shard}.emb.npy")[mine],
                atol=1e-3,
            )
    assert both_folds == {0, 1}
    record = fsio.read_json(str(tmp_path / "crossfit" / "scorer.json"))
    assert record["crossfit"] == {"folds": 2, "models_per_fold": 1, "seed": 3}
    assert record["weights"] == [str(weights), str(other)]
    with pytest.raises(ConfigError, match="cross-fit scores"):
        read_scorer_record(str(tmp_path / "crossfit"), "nsfw")
    assert read_scorer_record(out, "nsfw")["weights"] == str(weights)


def test_several_models_per_fold_score_the_mean_of_their_cosines(scored, tmp_path):
    """--folds 2 --fold-weights W O O W: fold 0's rows are scored by W and O (files 0 and 2),
    fold 1's by O and W (files 1 and 3), so every row's score is the mean of the two single
    models' scores; its stored embedding is its fold's first model's (W for fold 0, O for 1)."""
    from planted_pool import tiny_model_config

    from curation.score.model import save_random_weights
    from curation.score.shard_scoring import crossfit_folds

    planted, weights, out = scored
    other = tmp_path / "other.safetensors"
    save_random_weights("tiny-clip", str(other), str(tiny_model_config()), seed=1)
    local = RunOptions(use_ray=False, progress=False)
    common = dict(pool=str(planted.pool), model="tiny-clip", tag="tiny", batch_size=16)
    alone = tmp_path / "other_alone"
    assert score_pass(ScoreConfig(weights=str(other), out=str(alone), **common), local).ok
    ensemble = ScoreConfig(
        weights="",
        out=str(tmp_path / "ensemble"),
        fold_weights=(str(weights), str(other), str(other), str(weights)),
        folds=2,
        fold_seed=3,
        **common,
    )
    assert score_pass(ensemble, local).ok
    for shard in ("00000", "00001", "00002"):
        got = read(tmp_path / "ensemble" / "raw" / f"{shard}.parquet")
        first = read(Path(out) / "raw" / f"{shard}.parquet")
        second = read(alone / "raw" / f"{shard}.parquet")
        mean = (
            first["clip_score"].to_numpy(zero_copy_only=False)
            + second["clip_score"].to_numpy(zero_copy_only=False)
        ) / 2
        assert np.allclose(
            got["clip_score"].to_numpy(zero_copy_only=False), mean, atol=1e-5, equal_nan=True
        )
        folds = crossfit_folds(got["uid"].to_pylist(), 2, 3)
        embeddings = np.load(tmp_path / "ensemble" / f"{shard}.emb.npy")
        for fold, single in enumerate((Path(out), alone)):
            mine = folds == fold
            expected = np.load(single / f"{shard}.emb.npy")[mine]
            assert np.allclose(embeddings[mine], expected, atol=1e-3)
    record = fsio.read_json(str(tmp_path / "ensemble" / "scorer.json"))
    assert record["crossfit"] == {"folds": 2, "models_per_fold": 2, "seed": 3}


def test_folds_must_divide_the_fold_weights(tmp_path, capsys):
    with pytest.raises(ConfigError, match="must be at least 2 and divide the 3"):
        ScoreConfig(str(tmp_path), "tiny-clip", "", fold_weights=("a", "b", "c"), folds=2)
    with pytest.raises(ConfigError, match="must be at least 2"):
        ScoreConfig(str(tmp_path), "tiny-clip", "", fold_weights=("a", "b"), folds=1)
    with pytest.raises(ConfigError, match="--folds needs --fold-weights"):
        ScoreConfig(str(tmp_path), "tiny-clip", "w", folds=2)
    base = ["score", "--pool", str(tmp_path), "--model", "tiny-clip"]
    assert main([*base, "--fold-weights", "a", "b", "c", "--folds", "2"]) == 2
    assert "divide the 3 --fold-weights" in capsys.readouterr().err


def test_cross_fitting_needs_two_fold_models_and_no_single_one(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--fold-weights with 2 or more"):
        ScoreConfig(str(tmp_path), "tiny-clip", "w", fold_weights=("a", "b"))
    with pytest.raises(ConfigError, match="--fold-weights with 2 or more"):
        ScoreConfig(str(tmp_path), "tiny-clip", "", fold_weights=("a",))
    base = ["score", "--pool", str(tmp_path), "--model", "tiny-clip"]
    assert main([*base, "--weights", "w", "--fold-weights", "a", "b"]) == 2
    assert "--fold-weights with 2 or more" in capsys.readouterr().err
