"""transformers' own entry points on HF exports of the tiny preset (1.5k BPE, 64 text
positions, 8-pixel patches): AutoTokenizer gives our ids, AutoProcessor honours the patch size,
patch count and text length, and on a tiny checkpoint trained into phase 3 (NaFlex),
AutoProcessor + AutoModel and pipeline("zero-shot-image-classification") give the top-1 that
`training eval` reports on the mini web's zero-shot set."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.training.test_trainer import tiny_args
from training.cli import main
from training.config import load_args
from training.eval.datasets import classnames_and_templates
from training.eval.run import evaluate_checkpoint
from training.eval.zeroshot import zeroshot_predictions
from training.export.hf import export_hf, naflex_inputs
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.run_folder import load_encoder, resolve_checkpoint, tokenizer_for_checkpoint
from training.trainer import make_tokenizer, train

TEXTS = ["Two  BLUE squares, on grass", "a photo of a circle.", "ＦＵＬＬ width “quotes”"]
CLASSES = ["circle", "square", "triangle"]
GREEN = Image.new("RGB", (120, 60), (30, 200, 30))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    args = load_args("tiny")
    tokenizer = make_tokenizer(args.model.tokenizer, args.model.box_bins)
    torch.manual_seed(4)
    model = SigLIP2(
        model_config("tiny", distill=None, **{"text.vocab_size": tokenizer.vocab_size})
    ).eval()
    out = tmp_path_factory.mktemp("hf")
    export_hf(model.state_dict(), model.cfg, out, tokenizer)
    return out, model, tokenizer


@pytest.fixture(scope="module")
def naflex_export(shard_world, tmp_path_factory) -> tuple[Path, Path]:
    """(run, HF export) of the tiny preset (its tokenizer and box bins) trained 4 steps, the
    last 2 on NaFlex batches (phase 3), exported with `python -m training export`."""
    root = tmp_path_factory.mktemp("naflex")
    tiny = load_args("tiny").model
    args = tiny_args(
        shard_world,
        root / "run",
        steps=4,
        model={"tokenizer": tiny.tokenizer, "box_bins": tiny.box_bins},
        schedule={"steps": 4, "phase3_start": 0.5},
        checkpoint={"every": 4},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(args)
    finally:
        torch.set_num_threads(threads)
    out = root / "hf"
    assert main(["export", "--ckpt", str(root / "run"), "--format", "hf", "--out", str(out)]) == 0
    return root / "run", out


@pytest.fixture(scope="module")
def zeroshot_set(tmp_path_factory) -> Path:
    """The mini web's zero-shot set (24 pictures at their web sizes and aspect ratios)."""
    from curation.minicc.evalsets import plan_eval_sets, write_eval_sets

    root = tmp_path_factory.mktemp("minicc")
    write_eval_sets(root, {"zeroshot": plan_eval_sets(0, 24)["zeroshot"]})
    return root / "eval" / "zeroshot"


def labelled_pictures(dataset: Path) -> tuple[list[Image.Image], list[int]]:
    images, labels = [], []
    with tarfile.open(dataset / "test" / "0.tar") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            data = tar.extractfile(member).read()
            if member.name.endswith(".jpg"):
                images.append(Image.open(io.BytesIO(data)))
            else:
                labels.append(int(data))
    return images, labels


def training_eval_top1(run: Path, dataset: Path, out: Path) -> dict:
    report = evaluate_checkpoint(
        run, str(dataset.parent), ["zeroshot"], {"zeroshot": str(dataset)}, out
    )
    return report["results"]["zeroshot"]


def test_config_ids_lie_inside_the_vocabulary(tiny_export):
    folder, model, tokenizer = tiny_export
    config = json.loads((folder / "config.json").read_text())
    for ids in (config, config["text_config"]):
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            assert ids.get(key) is None or 0 <= ids[key] < model.cfg.text.vocab_size, key


def test_auto_tokenizer_gives_our_ids_with_and_without_the_shipped_class(tiny_export):
    import transformers

    folder, model, tokenizer = tiny_export
    ours = tokenizer.encode(TEXTS, model.cfg.text.context_length)
    for trust in (False, True):
        loaded = transformers.AutoTokenizer.from_pretrained(
            folder, local_files_only=True, trust_remote_code=trust
        )
        ids = loaded(TEXTS, padding="max_length", max_length=64, truncation=True)["input_ids"]
        assert torch.equal(torch.tensor(ids), ours)


def test_the_shipped_class_file_and_its_auto_map_entry_are_both_needed(tiny_export, tmp_path):
    """Why the export keeps tokenization_openvision.py although every preset has 64 positions:
    without the auto_map entry transformers builds its Gemma-style Siglip2Tokenizer, which fails
    on our vocabulary at the first text; with the entry but without the file,
    trust_remote_code=True fails."""
    import transformers

    folder = tiny_export[0]
    no_entry, no_file = tmp_path / "no_entry", tmp_path / "no_file"
    for copy in (no_entry, no_file):
        shutil.copytree(folder, copy)
        (copy / "tokenization_openvision.py").unlink()
    config = json.loads((no_entry / "tokenizer_config.json").read_text())
    del config["auto_map"]
    (no_entry / "tokenizer_config.json").write_text(json.dumps(config))
    gemma_style = transformers.AutoTokenizer.from_pretrained(no_entry, local_files_only=True)
    assert type(gemma_style).__name__ == "Siglip2Tokenizer"
    with pytest.raises(Exception, match="<unk>"):
        gemma_style(TEXTS)
    with pytest.raises(OSError, match="tokenization_openvision.py"):
        transformers.AutoTokenizer.from_pretrained(
            no_file, local_files_only=True, trust_remote_code=True
        )


def test_auto_processor_honours_patch_size_patch_count_and_text_length(tiny_export):
    import transformers

    folder, model, tokenizer = tiny_export
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    image = Image.new("RGB", (150, 90), (200, 30, 30))
    inputs = processor(text=TEXTS, images=[image], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 64, 8 * 8 * 3)
    assert torch.equal(inputs["input_ids"], tokenizer.encode(TEXTS, 64))
    hf_model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        hf_model(**inputs)  # the shapes fit the model


def our_naflex_predictions(run: Path, dataset: Path) -> list[int]:
    folder = resolve_checkpoint(run)
    model = load_encoder(folder)
    tokenizer = tokenizer_for_checkpoint(folder, model.cfg.text.context_length)
    return zeroshot_predictions(model, tokenizer, str(dataset), naflex=True)[0].tolist()


def test_auto_processor_and_auto_model_give_training_evals_zero_shot_top1(
    naflex_export, zeroshot_set, tmp_path
):
    """The set as it is (5 prompt templates, ensembled as CLIP does), the same checkpoint."""
    import transformers

    run, folder = naflex_export
    ours = training_eval_top1(run, zeroshot_set, tmp_path)
    assert ours["input"] == "naflex" and ours["samples"] == 24
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    classes, templates = classnames_and_templates(str(zeroshot_set))
    prompts = [template.replace("{c}", name) for name in classes for template in templates]
    images, labels = labelled_pictures(zeroshot_set)
    with torch.no_grad():
        texts = model.get_text_features(**processor(text=prompts, return_tensors="pt"))
        texts = F.normalize(texts.pooler_output, dim=-1).view(len(classes), len(templates), -1)
        texts = F.normalize(texts.mean(dim=1), dim=-1)
        pictures = model.get_image_features(**processor(images=images, return_tensors="pt"))
    theirs = (F.normalize(pictures.pooler_output, dim=-1) @ texts.T).argmax(dim=1).tolist()
    assert theirs == our_naflex_predictions(run, zeroshot_set)
    assert sum(p == label for p, label in zip(theirs, labels)) / len(labels) == pytest.approx(
        ours["top1"]
    )


def test_zero_shot_pipeline_gives_training_evals_top1_with_one_template(
    naflex_export, zeroshot_set, tmp_path
):
    """The export as it is (no trust_remote_code). The pipeline takes one hypothesis template:
    the set with its templates file cut to its first template, for the pipeline and `training
    eval` alike."""
    import transformers

    run, folder = naflex_export
    dataset = tmp_path / "zeroshot"
    shutil.copytree(zeroshot_set, dataset)
    classes, templates = classnames_and_templates(str(dataset))
    (dataset / "zeroshot_classification_templates.txt").write_text(templates[0] + "\n")
    ours = training_eval_top1(run, dataset, tmp_path / "eval")
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(folder))
    assert type(pipe.tokenizer).__name__ == "TokenizersBackend"  # not the shipped class
    images, labels = labelled_pictures(dataset)
    theirs = [
        classes.index(
            pipe(
                image,
                candidate_labels=classes,
                hypothesis_template=templates[0].replace("{c}", "{}"),
            )[0]["label"]
        )
        for image in images
    ]
    assert theirs == our_naflex_predictions(run, dataset)
    assert sum(p == label for p, label in zip(theirs, labels)) / len(labels) == pytest.approx(
        ours["top1"]
    )


def pipeline_ranking(folder: Path, image: Image.Image, classes: list[str], **kwargs) -> list:
    import transformers

    pipe = transformers.pipeline("zero-shot-image-classification", model=str(folder), **kwargs)
    ranked = pipe(image, candidate_labels=classes, hypothesis_template="a photo of a {}.")
    return [(r["score"], r["label"]) for r in ranked]


def our_ranking(model: SigLIP2, folder: Path, image: Image.Image, classes: list[str], tokenizer):
    import transformers

    texts = tokenizer.encode([f"a photo of a {c}." for c in classes], model.cfg.text.context_length)
    processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        pooled = model.encode_image(
            **naflex_inputs(processor(images=[image], return_tensors="pt"))
        )[0]
        scores = F.normalize(pooled, dim=-1) @ F.normalize(model.encode_text(texts), dim=-1).T
    logits = scores * model.logit_scale.exp() + model.logit_bias
    return sorted(zip(torch.sigmoid(logits[0]).tolist(), classes), reverse=True)


def assert_same_ranking(theirs: list, ours: list) -> None:
    assert [label for _, label in theirs] == [label for _, label in ours]
    assert [score for score, _ in theirs] == pytest.approx([score for score, _ in ours], abs=1e-5)


def test_the_tiny_presets_export_runs_in_the_pipeline_as_it_is(tiny_export):
    """The pipeline pads SigLIP text to 64 tokens: the tiny preset's text tower has 64 positions,
    so the export loads without trust_remote_code and scores as our model does."""
    folder, model, tokenizer = tiny_export
    assert model.cfg.text.context_length == 64
    ours = our_ranking(model, folder, GREEN, CLASSES, tokenizer)
    assert_same_ranking(pipeline_ranking(folder, GREEN, CLASSES), ours)


def test_a_text_tower_with_fewer_positions_needs_the_shipped_tokenizer_class(tiny_export, tmp_path):
    """A tower built with 32 positions gets 64 tokens from the pipeline and fails; with
    trust_remote_code=True the shipped class caps the padding at 32 and the scores are ours."""
    _, _, tokenizer = tiny_export
    torch.manual_seed(6)
    overrides = {"text.vocab_size": tokenizer.vocab_size, "text.context_length": 32}
    model = SigLIP2(model_config("tiny", distill=None, **overrides)).eval()
    export_hf(model.state_dict(), model.cfg, tmp_path, tokenizer)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        pipeline_ranking(tmp_path, GREEN, CLASSES)
    ours = our_ranking(model, tmp_path, GREEN, CLASSES, tokenizer)
    assert_same_ranking(pipeline_ranking(tmp_path, GREEN, CLASSES, trust_remote_code=True), ours)
