"""Each grounding converter, on hand-written native files, puts every box on its drawn rectangle."""

import json
import pickle
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ingest_scenes import (
    check_refs_on_image,
    image_name,
    refcoco_file_name,
    scenes,
    write_coco_style,
    write_grand,
    write_images,
    write_openimages,
    write_refcoco_dataset,
    write_visualgenome,
)

from curation.cli import main
from curation.ingest.boxes import BoxConvention
from curation.ingest.formats.refcoco import load_refs
from curation.ingest.licences import licence_of
from curation.stages.common import RunOptions
from curation.stages.grounding import DECONTAMINATION_FILE, GroundingConfig, run
from training.data.samples import grounding_sample, square_image
from training.data.tars import iter_tar_samples


def convert_grounding(format_name, images, annotations, out, *, use_ray=False, **settings):
    """One grounding run; its report and the plan record (the report's summary)."""
    config = GroundingConfig(format_name, images, tuple(annotations), out, **settings)
    (report,) = run(config, RunOptions(use_ray=use_ray, progress=False))
    return report, report.summary


def read_grounding(out: Path) -> list[tuple[dict, bytes]]:
    samples = []
    for tar_path in sorted(out.glob("*.tar")):
        members = {}
        with tarfile.open(tar_path) as archive:
            for member in archive:
                key, _, extension = member.name.partition(".")
                members.setdefault(key, {})[extension] = archive.extractfile(member).read()
        samples += [(json.loads(m["json"]), m["jpg"]) for _, m in sorted(members.items())]
    return samples


def box_drops(out: Path) -> dict[str, int]:
    total: dict[str, int] = {}
    for record in (out / "_stats" / "grounding").glob("*.json"):
        for reason, count in json.loads(record.read_text())["extra"]["boxes_dropped"].items():
            total[reason] = total.get(reason, 0) + count
    return total


def check_all(
    out: Path, scenes_, source: str, id_of=lambda s: str(s.image_id), min_share: float = 0.95
) -> list[dict]:
    by_id = {id_of(s): s for s in scenes_}
    samples = read_grounding(out)
    assert sorted(meta["image_id"] for meta, _ in samples) == sorted(by_id)
    for meta, jpeg in samples:
        assert jpeg.startswith(b"\xff\xd8\xff")
        assert meta["source"] == source and meta["licence"] == licence_of(source)
        check_refs_on_image(jpeg, meta["refs"], by_id[meta["image_id"]], min_share)
    return [meta for meta, _ in samples]


EXPECTED_BOX_DROPS = {"box_outside_image": 1, "zero_area_box": 1}


def test_objects365_coco_xywh_boxes_land_on_their_rectangles(tmp_path, ray_session):
    scenes_ = scenes()
    write_images(tmp_path / "images" / "patch0", scenes_)
    write_coco_style(tmp_path / "zhiyuan_objv2_train.json", scenes_)
    report, record = convert_grounding(
        "objects365",
        str(tmp_path / "images"),
        [str(tmp_path / "zhiyuan_objv2_train.json")],
        str(tmp_path / "out"),
        samples_per_shard=2,
        use_ray=True,
    )
    assert report.ok and len(report.completed) == 2
    check_all(tmp_path / "out", scenes_, "objects365")
    assert box_drops(tmp_path / "out") == EXPECTED_BOX_DROPS
    assert record["annotation_drops"] == {"crowd_box": 1}


def test_openimages_fractional_xxyy_boxes_land_on_their_rectangles(tmp_path):
    scenes_ = scenes()
    # OpenImages names every image {ImageID}.jpg; the PNG one must still be read by its content.
    write_images(tmp_path / "images", scenes_, name=lambda s: f"{s.image_id}.jpg")
    files = write_openimages(tmp_path, scenes_)
    report, record = convert_grounding(
        "openimages",
        str(tmp_path / "images"),
        [str(p) for p in files],
        str(tmp_path / "out"),
        use_ray=False,
    )
    assert report.ok
    metas = check_all(tmp_path / "out", scenes_, "openimages")
    assert "红色的杯子 café ☕" in {ref["phrase"] for meta in metas for ref in meta["refs"]}
    assert box_drops(tmp_path / "out") == EXPECTED_BOX_DROPS
    assert record["annotation_drops"] == {"group_box": 1, "unknown_label": 1}


def test_visualgenome_regions_land_on_their_rectangles_and_refcoco_eval_images_are_excluded(
    tmp_path,
):
    scenes_ = scenes()
    write_images(tmp_path / "images" / "VG_100K_2", scenes_)
    exclude = tmp_path / "eval_ids.json"
    exclude.write_text(json.dumps([555]))
    files = write_visualgenome(tmp_path, scenes_, coco_ids={103: 555, 101: 777})
    report, record = convert_grounding(
        "visualgenome",
        str(tmp_path / "images"),
        [str(p) for p in files],
        str(tmp_path / "out"),
        exclude_coco_files=(str(exclude),),
        use_ray=False,
    )
    assert report.ok
    check_all(tmp_path / "out", scenes_[:2], "visualgenome")
    assert record["image_drops"] == {"evaluation_image": 1}
    assert box_drops(tmp_path / "out") == EXPECTED_BOX_DROPS


def test_grand_xyxy_boxes_land_on_their_rectangles_and_a_one_based_override_is_honoured(tmp_path):
    scenes_ = scenes()
    write_images(tmp_path / "sa1b", scenes_)
    write_grand(tmp_path / "grand.json", scenes_)
    write_grand(tmp_path / "grand_1based.json", scenes_, one_based=True)
    for name, convention in (
        ("grand.json", None),
        ("grand_1based.json", BoxConvention("xyxy", "pixel", True)),
    ):
        out = tmp_path / f"out-{name}"
        report, _ = convert_grounding(
            "grand",
            str(tmp_path / "sa1b"),
            [str(tmp_path / name)],
            str(out),
            convention=convention,
            use_ray=False,
        )
        assert report.ok
        metas = check_all(out, scenes_, "grand", id_of=lambda s: str(s.image_id))
        phrases = {ref["phrase"] for meta in metas for ref in meta["refs"]}
        assert "red cup" in phrases and not any(p.startswith("Assistant") for p in phrases)


def test_refcoco_family_keeps_train_refs_and_drops_every_evaluation_image(tmp_path):
    scenes_ = scenes()
    write_images(tmp_path / "train2014", scenes_, name=refcoco_file_name)
    # 101 is RefCOCO val; 102 is RefCOCO train but RefCOCOg val: both are evaluation images.
    refcoco = write_refcoco_dataset(tmp_path / "refcoco", scenes_, {101: "val"}, as_json=False)
    refcocog = write_refcoco_dataset(tmp_path / "refcocog", scenes_, {102: "val"}, as_json=True)
    out = tmp_path / "out"
    report, record = convert_grounding(
        "refcoco",
        str(tmp_path / "train2014"),
        [str(p) for p in refcoco + refcocog],
        str(out),
        use_ray=False,
    )
    assert report.ok
    assert sorted(json.loads((out / DECONTAMINATION_FILE).read_text())) == [101, 102]
    samples = read_grounding(out)
    assert sorted((m["source"], m["image_id"]) for m, _ in samples) == [
        ("refcoco", "103"),
        ("refcocog", "103"),
    ]
    for meta, jpeg in samples:
        assert [ref["phrase"] for ref in meta["refs"]] == ["Ärmel der Jacke", "the Ärmel der Jacke"]
        check_refs_on_image(jpeg, meta["refs"], scenes_[2])
    # The train refs of RefCOCO's 102 and RefCOCOg's 101 are dropped as evaluation images.
    assert record["image_drops"] == {"evaluation_image": 2}


def test_refs_pickles_that_name_code_are_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([Exploit()]))
    with pytest.raises(ValueError, match="only plain data"):
        load_refs(str(path))


def test_cli_writes_trainer_readable_shards_and_records_the_source_in_the_mix(tmp_path):
    scenes_ = scenes()
    write_images(tmp_path / "images" / "patch0", scenes_)
    write_coco_style(tmp_path / "objects365.json", scenes_)
    mix = tmp_path / "mix.yaml"
    mix.write_text("sources:\n  objects365: {shards: x, repeat: 2, max_samples: 2}\n")
    argv = [
        "grounding",
        "--format",
        "objects365",
        "--images",
        str(tmp_path / "images"),
        "--annotations",
        str(tmp_path / "objects365.json"),
        "--out",
        str(tmp_path / "out"),
        "--mix-config",
        str(mix),
        "--no-ray",
        "--seed",
        "4",
    ]
    assert main(argv) == 0
    assert main(argv) == 0  # a re-run finds every shard done and the same plan
    index = pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist()
    assert len(index) == 2  # the mix file's quota
    parsed = [
        grounding_sample(raw, 32) for raw in iter_tar_samples(str(tmp_path / "out" / "00000.tar"))
    ]
    assert [len(s.refs) for s in parsed] == [row["refs"] for row in index]
    assert all(
        s.contrastive is False and tuple(square_image(s.image, 32).shape) == (3, 32, 32)
        for s in parsed
    )
    text = mix.read_text()
    assert "repeat: 2" in text and "samples: 2" in text and str(tmp_path / "out" / "*.tar") in text
    other = [
        "grounding",
        "--format",
        "objects365",
        "--images",
        str(tmp_path / "images"),
        "--annotations",
        str(tmp_path / "objects365.json"),
        "--out",
        str(tmp_path / "out"),
        "--no-ray",
        "--seed",
        "5",
    ]
    assert main(other) == 2  # another plan into the same folder is refused


def test_missing_and_corrupt_images_are_counted_not_fatal(tmp_path):
    scenes_ = scenes()
    write_images(tmp_path / "images" / "patch0", scenes_[:2])
    (tmp_path / "images" / "patch0" / image_name(scenes_[1])).write_bytes(b"not an image")
    write_coco_style(tmp_path / "o.json", scenes_)
    report, _ = convert_grounding(
        "objects365",
        str(tmp_path / "images"),
        [str(tmp_path / "o.json")],
        str(tmp_path / "out"),
        use_ray=False,
    )
    assert report.ok
    stats = json.loads(next((tmp_path / "out" / "_stats" / "grounding").glob("*.json")).read_text())
    assert stats["drops"] == {"missing_image": 1, "undecodable_image": 1}
    assert stats["rows_out"] == 1


def test_max_side_downscales_large_images_and_the_boxes_still_fit(tmp_path):
    scenes_ = scenes()
    write_images(tmp_path / "sa1b", scenes_)
    write_grand(tmp_path / "grand.json", scenes_)
    report, _ = convert_grounding(
        "grand",
        str(tmp_path / "sa1b"),
        [str(tmp_path / "grand.json")],
        str(tmp_path / "out"),
        max_side=100,
        use_ray=False,
    )
    assert report.ok
    index = pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist()
    assert {(row["width"], row["height"]) for row in index} == {(100, 80)}
    # At half size a box's one-pixel rim is a blend of its colour and the background.
    check_all(tmp_path / "out", scenes_, "grand", min_share=0.85)


def test_openimages_v7_headed_class_list_and_visualgenome_without_image_data_are_read(tmp_path):
    scenes_ = scenes()[:2]
    write_images(tmp_path / "oi", scenes_, name=lambda s: f"{s.image_id}.jpg")
    boxes, names = write_openimages(tmp_path, scenes_)
    names.write_text(
        "LabelName,DisplayName\n" + names.read_text(encoding="utf-8"), encoding="utf-8"
    )
    report, _ = convert_grounding(
        "openimages",
        str(tmp_path / "oi"),
        [str(boxes), str(names)],
        str(tmp_path / "out-oi"),
        use_ray=False,
    )
    assert report.ok
    check_all(tmp_path / "out-oi", scenes_, "openimages")
    # Without image_data.json: images are {image_id}.jpg at the root, sized from the file itself.
    regions, _ = write_visualgenome(tmp_path, scenes_, coco_ids={})
    write_images(tmp_path / "vg", scenes_)
    report, _ = convert_grounding(
        "visualgenome",
        str(tmp_path / "vg"),
        [str(regions)],
        str(tmp_path / "out-vg"),
        use_ray=False,
    )
    assert report.ok
    check_all(tmp_path / "out-vg", scenes_, "visualgenome")


def test_annotation_files_of_the_wrong_format_are_named_in_the_error(tmp_path):
    bad = tmp_path / "boxes.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="boxes.csv: neither an OpenImages box CSV"):
        convert_grounding(
            "openimages", str(tmp_path), [str(bad)], str(tmp_path / "out"), use_ray=False
        )
    assert (
        main(
            [
                "grounding",
                "--format",
                "visualgenome",
                "--images",
                str(tmp_path),
                "--annotations",
                str(tmp_path / "missing.json"),
                "--out",
                str(tmp_path / "o"),
                "--no-ray",
            ]
        )
        == 2
    )
