"""A LAION-format and a DataComp-format list of the mini web's URLs, through ingest-urls → dedup →
download → blur-faces → shards, served by the session's mini Common Crawl."""

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.cli import main
from curation.ingest.boxes import pixel_box

LAION_ROWS = slice(0, 60)
DATACOMP_ROWS = slice(40, 100)  # 20 URLs are in both lists


def healthy_images(world: Path) -> list[dict]:
    truth = pq.read_table(world / "truth_images.parquet").to_pylist()
    return [row for row in truth if row["fault"] is None and row["final_url"] is None][:100]


def write_laion(path: Path, images: list[dict]) -> None:
    pq.write_table(
        pa.table(
            {
                "SAMPLE_ID": pa.array(range(len(images)), pa.int64()),
                "URL": [r["url"] for r in images] + [],
                "TEXT": [r["good_caption"] for r in images],
                "HEIGHT": [r["height"] for r in images],
                "WIDTH": [r["width"] for r in images],
                "LICENSE": ["?"] * len(images),
                "NSFW": ["UNLIKELY"] * len(images),
                "similarity": np.linspace(0.3, 0.4, len(images)),
            }
        ),
        path,
    )


def write_datacomp(path: Path, images: list[dict]) -> None:
    pq.write_table(
        pa.table(
            {
                "uid": [hashlib.md5(r["url"].encode()).hexdigest() for r in images],
                "url": [r["url"] for r in images] + [],
                "text": [f"photo: {r['good_caption']}" for r in images],
                "original_width": [r["width"] for r in images],
                "original_height": [r["height"] for r in images],
                "clip_b32_similarity_score": np.full(len(images), 0.31, np.float32),
                "clip_l14_similarity_score": np.full(len(images), 0.27, np.float32),
                # Stand-in "faces": the first drawn shape of each image (normalised xyxy, as DataComp's).
                "face_bboxes": [[r["boxes"][0]] for r in images],
                "sha256": [hashlib.sha256(r["url"].encode()).hexdigest() for r in images],
            }
        ),
        path,
    )


@pytest.fixture(scope="module")
def ingested_run(minicc_world, minicc_server, tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("ingest-run")
    images = healthy_images(minicc_world)
    write_laion(root / "laion.parquet", images[LAION_ROWS])
    write_datacomp(root / "datacomp.parquet", images[DATACOMP_ROWS])
    cidr = json.loads((minicc_world / "world.json").read_text())["allowed_cidr"]
    candidates, deduped, pool, train = (
        str(root / n) for n in ("candidates", "dedup", "pool", "train")
    )
    assert (
        main(
            [
                "ingest-urls",
                "--format",
                "laion",
                "--input",
                str(root / "laion.parquet"),
                "--out",
                candidates,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "ingest-urls",
                "--format",
                "datacomp",
                "--input",
                str(root / "datacomp.parquet"),
                "--out",
                candidates,
            ]
        )
        == 0
    )
    assert main(["dedup", "--input", candidates, "--out", deduped, "--buckets", "2"]) == 0
    assert (
        main(
            [
                "download",
                "--input",
                deduped,
                "--out",
                pool,
                "--allow-network",
                cidr,
                "--image-size",
                "96",
                "--samples-per-shard",
                "40",
                "--threads",
                "8",
                "--read-timeout",
                "3",
                "--total-timeout",
                "5",
            ]
        )
        == 0
    )
    shutil.copytree(pool, root / "pool-before-blur")
    assert main(["blur-faces", "--pool", pool, "--face-boxes", candidates]) == 0
    assert (
        main(
            [
                "shards",
                "--pool",
                pool,
                "--out",
                train,
                "--samples-per-shard",
                "64",
                "--image-size",
                "64",
            ]
        )
        == 0
    )
    return root, images


def table(folder: Path) -> list[dict]:
    return pa.concat_tables(
        [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    ).to_pylist()


def test_both_lists_become_candidates_with_their_source_and_own_columns(ingested_run):
    root, images = ingested_run
    laion = pq.read_table(root / "candidates" / "laion-00000.parquet")
    datacomp = pq.read_table(root / "candidates" / "datacomp-00000.parquet")
    assert set(laion["source"].to_pylist()) == {"laion"} and laion.num_rows == 60
    assert set(datacomp["source"].to_pylist()) == {"datacomp"} and datacomp.num_rows == 60
    assert laion["laion_clip_similarity"].to_pylist()[0] == pytest.approx(0.3)
    assert laion["width"].to_pylist() == [r["width"] for r in images[LAION_ROWS]]
    assert datacomp["face_bboxes"].to_pylist()[0] == [
        pytest.approx(images[40]["boxes"][0], abs=1e-6)
    ]
    assert datacomp["page_url"].null_count == datacomp.num_rows


def test_global_dedup_collapses_a_url_listed_by_both_sources(ingested_run):
    root, images = ingested_run
    rows = table(root / "dedup")
    assert len(rows) == len({r["url"] for r in rows}) == 100
    shared = {r["url"] for r in images[40:60]}
    for row in rows:
        if row["url"] in shared:
            assert len(row["texts"]) == 2 and row["texts"][1] in (
                f"photo: {row['texts'][0]}",
                row["texts"][0].removeprefix("photo: "),
            )


def test_dedup_records_every_source_of_a_shared_url(ingested_run):
    root, images = ingested_run
    shared = {r["url"] for r in images[40:60]}
    rows = [r for r in table(root / "dedup") if r["url"] in shared]
    assert all(sorted(r["sources"]) == ["datacomp", "laion"] for r in rows)


def test_every_listed_image_is_downloaded_and_reaches_the_training_shards(ingested_run):
    root, _ = ingested_run
    pool = table(root / "pool")
    assert len(pool) == 100 and {r["status"] for r in pool} == {"success"}
    train = table(root / "train")
    assert sorted(r["uid"] for r in train) == sorted(r["uid"] for r in pool)
    plan = json.loads((root / "train" / "_plan" / "plan.json").read_text())
    # The default --require names every stage with a keep column; none ran on this pool.
    assert plan["not_applied"] == ["balance", "score", "neardup", "nsfw", "debias", "langmix"]


def jpegs(tar_path: Path) -> dict[str, np.ndarray]:
    with tarfile.open(tar_path) as archive:
        return {
            m.name[:-4]: np.asarray(
                Image.open(io.BytesIO(archive.extractfile(m).read())).convert("RGB"), float
            )
            for m in archive
            if m.name.endswith(".jpg")
        }


def test_face_boxes_of_datacomp_urls_are_blurred_in_the_pool_and_nothing_else_changes(ingested_run):
    root, images = ingested_run
    faces = {r["url"]: r["boxes"][0] for r in images[DATACOMP_ROWS]}
    blurred = table(root / "pool" / "curation" / "blur_faces")
    by_uid = {r["uid"]: r for r in table(root / "pool")}
    assert {by_uid[r["uid"]]["url"] for r in blurred} == set(faces)
    checked = 0
    for tar_path in sorted((root / "pool").glob("*.tar")):
        before, after = jpegs(root / "pool-before-blur" / tar_path.name), jpegs(tar_path)
        for row in (r for r in by_uid.values() if r["key"] in after):
            assert hashlib.sha256(_member(tar_path, row["key"])).hexdigest() == row["sha256"]
            difference = np.abs(after[row["key"]] - before[row["key"]]).sum(axis=2)
            if row["url"] not in faces:
                assert difference.max() == 0
                continue
            x0, y0, x1, y1 = pixel_box(faces[row["url"]], row["width"], row["height"])
            inside = np.zeros(difference.shape, bool)
            inside[y0:y1, x0:x1] = True
            # Edges inside the face box are smoothed away; outside only JPEG re-encoding noise.
            assert difference[inside].mean() > 3 * difference[~inside].mean() + 1
            checked += 1
    assert checked == 60


def _member(tar_path: Path, key: str) -> bytes:
    with tarfile.open(tar_path) as archive:
        return archive.extractfile(f"{key}.jpg").read()


def test_blur_faces_rerun_after_losing_its_done_markers_does_not_blur_twice(ingested_run):
    root, _ = ingested_run
    before = {p.name: p.read_bytes() for p in (root / "pool").glob("*.tar")}
    for marker in (root / "pool" / "_stats" / "blur_faces").glob("*.json"):
        marker.unlink()  # as if the run died after committing the shards, before its markers
    assert (
        main(["blur-faces", "--pool", str(root / "pool"), "--face-boxes", str(root / "candidates")])
        == 0
    )
    assert {p.name: p.read_bytes() for p in (root / "pool").glob("*.tar")} == before
