import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from text_pool import kill_mid_pass_then_resume, write_text_pool

from curation import fsio
from curation.cli import main
from curation.stages.common import ConfigError, RunOptions
from curation.stages.langmix import LangmixConfig, draw_threshold, parse_mix, run
from curation.stages.shards import ShardsConfig
from curation.stages.shards import run as run_shards

LOCAL = RunOptions(use_ray=False, progress=False)
OTHER_LANGS = ("de", "fr", "ru", "ja")


def mixed_pool(root: Path, rows: int = 1200, english: float = 0.7) -> tuple[Path, dict[str, str]]:
    """A pool whose sidecars carry `lang`: `english` of the rows en, the rest spread over four."""
    rng = np.random.default_rng(1)
    langs = [
        "en" if draw < english else OTHER_LANGS[i % len(OTHER_LANGS)]
        for i, draw in enumerate(rng.random(rows))
    ]
    pool = root / "pool"
    pool.mkdir()
    uids = write_text_pool(pool, [f"caption {i}" for i in range(rows)], 300, langs)
    return pool, dict(zip(uids, langs))


def test_parse_mix_and_bad_mixes_fail_fast():
    assert parse_mix("en=0.9, other=0.1") == {"en": 0.9, "other": 0.1}
    with pytest.raises(ConfigError):
        parse_mix("en:0.9")
    with pytest.raises(ConfigError):
        LangmixConfig("pool", {"en": 0.9, "other": 0.2})
    with pytest.raises(ConfigError):
        LangmixConfig("pool", {"en": 1.0, "other": 0.0})


def test_draw_threshold_interpolates_inside_a_bin():
    histogram = np.zeros(4096, dtype=np.int64)
    histogram[[0, 1, 2]] = [10, 10, 20]
    assert draw_threshold(histogram, 15) == pytest.approx(1.5 / 4096)
    assert draw_threshold(histogram, 30) == pytest.approx(2.5 / 4096)
    assert draw_threshold(histogram, 40) == 1.0


def test_mix_of_70_30_pool_holds_90_10_in_the_written_shards(tmp_path, ray_session):
    pool, lang_of = mixed_pool(tmp_path)
    reports = run(
        LangmixConfig(str(pool), {"en": 0.9, "other": 0.1}), RunOptions(seed=3, progress=False)
    )
    assert all(r.ok for r in reports)
    summary = reports[-1].summary
    assert summary["binding"] == ["en"]  # every English row is kept; other languages are cut
    assert summary["rows_kept"]["en"] == summary["rows_before"]["en"]
    train = tmp_path / "train"
    shards = run_shards(
        ShardsConfig(str(pool), str(train), samples_per_shard=200, require=("langmix",)),
        RunOptions(seed=3, progress=False),
    )
    assert all(r.ok for r in shards)
    index = pa.concat_tables([pq.read_table(p) for p in sorted(train.glob("*.parquet"))])
    written = [lang_of[uid] for uid in index["uid"].to_pylist()]
    english = written.count("en") / len(written)
    assert abs(english - 0.9) <= 0.01
    assert summary["achieved"]["en"] == pytest.approx(english)
    assert len(written) == summary["kept_rows"]
    assert summary["lang_source"] == ["column lang"]
    assert set(summary["languages"]) == {"en", *OTHER_LANGS}


def test_languages_outside_the_mix_are_dropped_and_an_empty_quota_is_reported(tmp_path):
    pool, lang_of = mixed_pool(tmp_path, rows=600)
    reports = run(LangmixConfig(str(pool), {"en": 0.5, "de": 0.3, "ko": 0.2}), LOCAL)
    summary = reports[-1].summary
    assert summary["no_rows"] == ["ko"]
    assert summary["effective_target"] == pytest.approx({"en": 0.5 / 0.8, "de": 0.3 / 0.8})
    kept = pa.concat_tables(
        [pq.read_table(p) for p in sorted((pool / "curation" / "langmix").glob("0*.parquet"))]
    ).filter(pa.compute.field("keep_langmix"))
    langs = [lang_of[uid] for uid in kept["uid"].to_pylist()]
    assert set(langs) == {"en", "de"}
    assert abs(langs.count("de") / len(langs) - 0.375) <= 0.01


def test_the_mix_holds_among_the_rows_earlier_stages_keep(tmp_path):
    pool, lang_of = mixed_pool(tmp_path, rows=900)
    balance = pool / "curation" / "balance"
    balance.mkdir(parents=True)
    for sidecar in sorted(pool.glob("0*.parquet")):
        uids = pq.read_table(sidecar)["uid"].to_pylist()
        keep = [lang_of.get(uid) == "en" and i % 2 == 0 for i, uid in enumerate(uids)]
        keep = [k or lang_of.get(uid) not in (None, "en") for k, uid in zip(keep, uids)]
        pq.write_table(pa.table({"uid": uids, "keep_balance": keep}), balance / sidecar.name)
    summary = run(LangmixConfig(str(pool), {"en": 0.5, "other": 0.5}), LOCAL)[-1].summary
    assert summary["after"] == ["balance"]
    ours = pa.concat_tables(
        [pq.read_table(p) for p in sorted((pool / "curation" / "langmix").glob("0*.parquet"))]
    )
    balanced = pa.concat_tables([pq.read_table(p) for p in sorted(balance.glob("*.parquet"))])
    kept_by_balance = set(balanced.filter(pa.compute.field("keep_balance"))["uid"].to_pylist())
    kept = [u for u, k in zip(ours["uid"].to_pylist(), ours["keep_langmix"].to_pylist()) if k]
    assert set(kept) <= kept_by_balance
    english = sum(lang_of[u] == "en" for u in kept) / len(kept)
    assert abs(english - 0.5) <= 0.01
    assert summary["eligible_rows"] == len(kept_by_balance & set(lang_of))


def test_without_a_language_column_the_caption_language_is_detected(tmp_path):
    english = "a photograph of a small red house beside a quiet river in the morning light"
    german = "ein kleines rotes Haus neben einem ruhigen Fluss im Licht des frühen Morgens"
    pool = tmp_path / "pool"
    pool.mkdir()
    write_text_pool(pool, [english] * 40 + [german] * 40, 40)
    summary = run(LangmixConfig(str(pool), {"en": 0.75, "other": 0.25}), LOCAL)[-1].summary
    assert summary["lang_source"] == ["detected from text"]
    assert summary["languages"] == {"en": 40, "de": 40}
    assert summary["rows_kept"] == {"en": 40, "other": pytest.approx(13, abs=1)}


def test_rerun_is_byte_identical_and_other_settings_are_refused(tmp_path, capsys):
    pool, _ = mixed_pool(tmp_path, rows=600)
    args = ["langmix", "--pool", str(pool), "--language-mix", "en=0.8,other=0.2", "--no-ray"]
    assert main(args + ["--no-progress"]) == 0
    out = pool / "curation" / "langmix"
    first = {p.name: p.read_bytes() for p in sorted(out.glob("0*.parquet"))}
    fsio.remove(str(out))
    assert main(args + ["--no-progress"]) == 0
    assert {p.name: p.read_bytes() for p in sorted(out.glob("0*.parquet"))} == first
    changed = ["langmix", "--pool", str(pool), "--language-mix", "en=0.5,other=0.5", "--no-ray"]
    assert main(changed) == 2
    assert "planned from other inputs" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["langmix_count", "langmix"])
def test_a_killed_process_resumes_to_identical_outputs(tmp_path, stage):
    pool, _ = mixed_pool(tmp_path, rows=1200)
    args = ["langmix", "--pool", str(pool), "--language-mix", "en=0.9,other=0.1", "--seed", "3"]
    args += ["--no-ray", "--no-progress"]
    out = pool / "curation" / "langmix"
    kill_mid_pass_then_resume("curation.stages.langmix", stage, args, out)
    resumed = {p.name: p.read_bytes() for p in sorted(out.glob("0*.parquet"))}
    fsio.remove(str(out))
    assert main(args) == 0
    assert {p.name: p.read_bytes() for p in sorted(out.glob("0*.parquet"))} == resumed
    assert len(resumed) == 4
