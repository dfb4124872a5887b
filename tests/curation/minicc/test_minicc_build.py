"""The build's artefacts: determinism, truth tables, evaluation sets, grounding shards, world.json."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import tarfile
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.minicc.build import GENERATOR_VERSION, WORLD_FILE, build_world, stale_world_reason
from curation.minicc.vocab import KINDS

SERVER_FILES = {"requests.jsonl", "server.json"}  # written by a server, not by the build


def _digests(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in SERVER_FILES
    }


def _tar(path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, extension = member.name.split(".", 1)
            samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def _pixels(data: bytes, size=None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        return np.asarray(image.resize(size) if size else image, dtype=np.float32)


@pytest.fixture(scope="module")
def truth(tiny_world):
    root, _ = tiny_world
    return (
        pq.read_table(root / "truth.parquet").to_pylist(),
        pq.read_table(root / "truth_images.parquet").to_pylist(),
    )


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tiny_world, tmp_path):
    root, world = tiny_world
    again = build_world(
        tmp_path / "again", seed=world["seed"], scale_name="tiny", port=world["port"], processes=1
    )  # other worker count, same bytes
    assert again["counts"] == world["counts"]
    assert _digests(tmp_path / "again") == _digests(root)
    build_world(
        tmp_path / "other",
        seed=world["seed"] + 1,
        scale_name="tiny",
        port=world["port"],
        processes=2,
    )
    other = _digests(tmp_path / "other")
    assert other["truth.parquet"] != _digests(root)["truth.parquet"]


def test_build_refuses_a_folder_that_is_not_a_build(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a minicc build"):
        build_world(tmp_path, scale_name="tiny")


def test_a_world_from_another_generator_version_seed_or_scale_is_stale(tiny_world, tmp_path):
    root, world = tiny_world
    assert world["generator_version"] == GENERATOR_VERSION
    assert stale_world_reason(root, seed=world["seed"], scale="tiny") is None
    assert "not found" in stale_world_reason(tmp_path)
    seed = world["seed"]
    assert f"built with seed {seed}, not {seed + 1}" in stale_world_reason(root, seed=seed + 1)
    assert "scale 'tiny', not 'small'" in stale_world_reason(root, scale="small")
    old = {k: v for k, v in world.items() if k != "generator_version"}  # a build from before
    (tmp_path / WORLD_FILE).write_text(json.dumps(old))
    assert f"generator version 1; this code builds version {GENERATOR_VERSION}" in (
        stale_world_reason(tmp_path)
    )


def test_the_demo_refuses_to_resume_on_a_stale_world(tmp_path):
    from curation.demo import run_demo

    (tmp_path / "world").mkdir()
    (tmp_path / "world" / WORLD_FILE).write_text(json.dumps({"seed": 0, "scale": "tiny"}))
    (tmp_path / "pool").mkdir()  # a stage output computed from that world
    with pytest.raises(SystemExit, match="generator version 1.*Remove"):
        run_demo(tmp_path, "tiny", 0, train_steps=1, t=100, top_fraction=0.5)
    assert (tmp_path / "pool").is_dir() and (tmp_path / "world" / WORLD_FILE).exists()


def test_truth_counts_match_world_json(tiny_world, truth):
    _, world = tiny_world
    occurrences, images = truth
    counts = world["counts"]
    assert len(occurrences) == counts["img_tags"]
    assert len(images) == counts["image_urls"]
    assert len({r["page_url"] for r in occurrences}) == counts["pages"]
    pairs = [r for r in occurrences if r["image_url"] and r["text"] and not r["page_fault"]]
    assert len(pairs) == counts["pairs"]
    assert Counter(r["caption_kind"] for r in occurrences) == Counter(counts["caption_kinds"])


def test_truth_rows_are_consistent_with_the_image_table(truth):
    occurrences, images = truth
    by_url = {r["url"]: r for r in images}
    for row in occurrences:
        if row["image_url"] is None:
            assert row["url_form"] == "junk" and row["image_id"] is None
            continue
        image = by_url[row["image_url"]]
        assert (row["image_id"], row["fault"]) == (image["image_id"], image["fault"])
        if row["caption_kind"] == "good" and row["lang"] == "en":
            assert row["text"] == image["good_caption"] or row["text"].endswith(
                image["good_caption"].split(" ", 1)[1]
            )
        if row["caption_kind"] == "title_only":
            assert row["alt"] is None and row["title"]
        if row["caption_kind"] == "empty":
            assert not row["alt"] and not row["title"]
        assert row["caption_correct"] == (row["caption_kind"] in ("good", "title_only"))
        assert row["unsafe"] == image["unsafe"]
    for image in images:
        if image["variant"] != "srcset_small":
            assert image["page_references"] >= 1, image["url"]
        if image["variant"] in ("blank", "banner"):
            assert not image["kinds"] and image["good_caption"] is None
        elif image["image_id"] is not None:
            assert image["boxes"] and len(image["boxes"]) == len(image["kinds"])
            for box in image["boxes"]:
                assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1


def test_wrong_captions_describe_another_scene_and_hard_negatives_only_another_kind(truth):
    occurrences, images = truth
    by_scene = {r["scene_id"]: r for r in images}
    wrong = [
        r
        for r in occurrences
        if r["caption_kind"] in ("neighbour", "hard_negative") and r["lang"] == "en"
    ]
    assert {r["caption_kind"] for r in wrong} == {"neighbour", "hard_negative"}
    for row in wrong:
        image = by_scene[row["scene_id"]]
        assert row["text"] != image["good_caption"] and not row["caption_correct"]
        if row["caption_kind"] == "hard_negative":
            # Alt text of the same picture with exactly one shape's kind not its own.
            named = [w for w in row["text"].replace(",", "").split() if w in KINDS]
            assert len(named) == len(image["kinds"]), (row["text"], image["kinds"])
            assert sum(kind not in row["text"] for kind in image["kinds"]) <= 1


def test_bad_pictures_are_tiny_blank_or_banners_and_never_well_captioned(truth):
    occurrences, images = truth
    bad = {r["url"]: r for r in images if r["variant"] in ("tiny", "blank", "banner")}
    assert {r["variant"] for r in bad.values()} == {"tiny", "blank", "banner"}
    for image in bad.values():
        if image["variant"] == "tiny":
            assert max(image["width"], image["height"]) <= 40
        if image["variant"] == "banner":
            assert image["width"] / image["height"] >= 3.5
    shapeless = [r for r in occurrences if bad.get(r["image_url"], {}).get("variant") != "tiny"]
    assert not any(r["caption_correct"] for r in shapeless if r["image_url"] in bad)


def test_duplicates_and_near_duplicates_share_a_dup_group(tiny_world, truth):
    root, _ = tiny_world
    occurrences, images = truth
    assert max(Counter(r["image_url"] for r in occurrences if r["image_url"]).values()) >= 5
    groups: dict[str, list[dict]] = {}
    for image in images:
        if image["dup_group"] and image["variant"] in ("original", "copy", "reencode", "resize"):
            groups.setdefault(image["dup_group"], []).append(image)
    variants = [g for g in groups.values() if len(g) > 1]
    assert variants
    for group in variants:
        original = next(i for i in group if i["variant"] == "original")
        reference = _pixels(
            (root / "www" / f"{original['host']}{original['path']}").read_bytes(), (64, 64)
        )
        for image in group:
            data = (root / "www" / f"{image['host']}{image['path']}").read_bytes()
            assert np.abs(_pixels(data, (64, 64)) - reference).mean() < 8


def test_eval_sets_use_clip_benchmark_layout(tiny_world):
    root, world = tiny_world
    for name in ("zeroshot", "extreme_aspect"):
        folder = root / "eval" / name
        classnames = (folder / "classnames.txt").read_text().split("\n")[:-1]
        assert classnames == list(KINDS)
        templates = (folder / "zeroshot_classification_templates.txt").read_text().splitlines()
        assert templates and all("{c}" in t for t in templates)
        samples = _tar(folder / "test" / "0.tar")
        assert len(samples) == world["counts"]["eval"][name]
        for sample in samples.values():
            assert set(sample) == {"jpg", "cls"} and 0 <= int(sample["cls"]) < len(KINDS)
            if name == "extreme_aspect":
                with Image.open(io.BytesIO(sample["jpg"])) as image:
                    assert max(image.size) / min(image.size) >= 2.9
    retrieval = _tar(root / "eval" / "retrieval" / "test" / "0.tar")
    assert all(set(s) == {"jpg", "txt"} and s["txt"] for s in retrieval.values())
    for sample in _tar(root / "eval" / "refexp" / "test" / "0.tar").values():
        refs = json.loads(sample["json"])["refs"]
        assert len(refs) >= 2 and all(len(r["box"]) == 4 and r["phrase"] for r in refs)
    seg_classes = (root / "eval" / "segmentation" / "classnames.txt").read_text().split("\n")[:-1]
    assert seg_classes == ["background", *KINDS]
    for sample in _tar(root / "eval" / "segmentation" / "test" / "0.tar").values():
        mask = np.asarray(Image.open(io.BytesIO(sample["seg.png"])))
        with Image.open(io.BytesIO(sample["jpg"])) as image:
            assert mask.shape == (image.height, image.width)
        assert mask.max() < len(seg_classes) and (mask == 0).any() and (mask > 0).any()


def test_planted_eval_contaminants_look_like_their_eval_images(tiny_world, truth):
    root, _ = tiny_world
    _, images = truth
    contaminants = [r for r in images if r["is_eval_contaminant"]]
    assert contaminants
    for row in contaminants:
        name, key = row["eval_key"].split("/")
        original = _tar(root / "eval" / name / "test" / "0.tar")[key]["jpg"]
        web_copy = (root / "www" / f"{row['host']}{row['path']}").read_bytes()
        assert web_copy != original  # re-encoded, not byte-identical
        assert np.abs(_pixels(web_copy, (64, 64)) - _pixels(original, (64, 64))).mean() < 6


def test_grounding_shards_hold_boxes_for_every_shape(tiny_world, truth):
    root, world = tiny_world
    _, images = truth
    by_id = {r["image_id"]: r for r in images if r["variant"] == "original"}
    samples = {}
    for shard in sorted((root / "grounding").glob("*.tar")):
        samples.update(_tar(shard))
    assert len(samples) == world["counts"]["grounding_samples"] > 0
    for key, sample in samples.items():
        meta = json.loads(sample["json"])
        assert meta["source"] == "minicc"
        assert [r["phrase"] for r in meta["refs"]] == by_id[key]["phrases"]
        assert [r["box"] for r in meta["refs"]] == by_id[key]["boxes"]


def test_world_json_allow_list_covers_hosts_but_not_forbidden_addresses(tiny_world):
    root, _world = tiny_world
    saved = json.loads((root / "world.json").read_text())
    allowed = ipaddress.ip_network(saved["allowed_cidr"])
    assert all(ipaddress.ip_address(h) in allowed for h in saved["hosts"])
    assert all(ipaddress.ip_address(a) not in allowed for a in saved["forbidden_addresses"])
    assert all(
        ipaddress.ip_address(a).is_loopback for a in saved["hosts"] + saved["forbidden_addresses"]
    )
    assert "red star" in saved["concepts"] and "star" in saved["concepts"]
    assert set(saved["counts"]["fault_urls"]) == set(saved["faults"])
