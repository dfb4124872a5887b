"""transformers' own entry points on an HF export of the tiny preset (1.5k BPE, 32 text
positions, 8-pixel patches): AutoTokenizer gives our ids, AutoProcessor honours the patch size,
patch count and text length, and pipeline("zero-shot-image-classification") on the folder
classifies the mini web's zero-shot set exactly as our model does on the same pixels."""

import io
import json
import tarfile

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from training.config import load_args
from training.export.hf import export_hf
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.trainer import make_tokenizer

TEXTS = ["Two  BLUE squares, on grass", "a photo of a circle.", "ＦＵＬＬ width “quotes”"]
TEMPLATE = "a photo of a {}."


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
def zeroshot_set(tmp_path_factory) -> tuple[list[str], list[bytes], list[int]]:
    from curation.minicc.evalsets import plan_eval_sets, write_eval_sets

    root = tmp_path_factory.mktemp("minicc")
    write_eval_sets(root, {"zeroshot": plan_eval_sets(0, 24)["zeroshot"]})
    folder = root / "eval" / "zeroshot"
    classes = (folder / "classnames.txt").read_text().split("\n")[:-1]
    images, labels = [], []
    with tarfile.open(folder / "test" / "0.tar") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            data = tar.extractfile(member).read()
            (images if member.name.endswith(".jpg") else labels).append(data)
    return classes, images, [int(label) for label in labels]


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
        ids = loaded(TEXTS, padding="max_length", max_length=32, truncation=True)["input_ids"]
        assert torch.equal(torch.tensor(ids), ours)


def test_auto_processor_honours_patch_size_patch_count_and_text_length(tiny_export):
    import transformers

    folder, model, tokenizer = tiny_export
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    image = Image.new("RGB", (150, 90), (200, 30, 30))
    inputs = processor(text=TEXTS, images=[image], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 64, 8 * 8 * 3)
    assert torch.equal(inputs["input_ids"], tokenizer.encode(TEXTS, 32))
    hf_model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        hf_model(**inputs)  # the shapes fit the model


def test_zero_shot_pipeline_classifies_the_mini_web_set_like_our_model(tiny_export, zeroshot_set):
    import transformers

    folder, model, tokenizer = tiny_export
    classes, images, labels = zeroshot_set
    pipe = transformers.pipeline(
        "zero-shot-image-classification", model=str(folder), trust_remote_code=True
    )
    processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        texts = F.normalize(
            model.encode_text(tokenizer.encode([TEMPLATE.format(c) for c in classes], 32)), dim=-1
        )
    theirs, ours = [], []
    for data in images:
        picture = Image.open(io.BytesIO(data))
        ranked = pipe(picture, candidate_labels=classes, hypothesis_template=TEMPLATE)
        theirs.append(classes.index(ranked[0]["label"]))
        pixels = processor(images=[picture], return_tensors="pt")
        rows, cols = pixels["spatial_shapes"][0].tolist()
        coords = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"))
        count = rows * cols
        with torch.no_grad():
            pooled = model.encode_image(
                patches=pixels["pixel_values"][:, :count],
                patch_coords=coords.reshape(2, -1).T[None],
            )[0]
        ours.append(int((F.normalize(pooled, dim=-1) @ texts.T).argmax()))
    assert theirs == ours
    top1 = sum(p == label for p, label in zip(theirs, labels)) / len(labels)
    assert top1 == sum(p == label for p, label in zip(ours, labels)) / len(labels)
