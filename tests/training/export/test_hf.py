"""HF transformers round trip: our checkpoint → Siglip2 folder that transformers loads offline
with the same embeddings (1e-4); a randomly initialised Siglip2 saved to disk → our checkpoint
with the same embeddings."""

import json

import pytest
import torch

from training.checkpoint import load_trained_model
from training.cli import main
from training.export.hf import pixel_inputs
from training.models.vision import patchify
from training.run_folder import tokenizer_for_checkpoint
from training.tokenizer import Tokenizer

TEXTS = ["a red circle", "Two BLUE squares on grass", "word " * 80]


def features(output):
    """transformers 5 returns model outputs from get_*_features."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    run, model = tiny_run
    out = tmp_path_factory.mktemp("hf")
    assert main(["export", "--ckpt", str(run), "--format", "hf", "--out", str(out)]) == 0
    return out, model


def test_transformers_loads_the_export_offline_with_our_embeddings(exported):
    import transformers

    folder, ours = exported
    hf_model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    hf_tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(
        folder, local_files_only=True
    )
    assert isinstance(hf_model, transformers.Siglip2Model)
    encoded = hf_tokenizer(TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    assert list(encoded) == ["input_ids"]
    assert torch.equal(
        encoded.input_ids, Tokenizer(context_length=ours.cfg.text.context_length).encode(TEXTS)
    )
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        hf_images = features(hf_model.get_image_features(**pixel_inputs(images, 8)))
        hf_texts = features(hf_model.get_text_features(input_ids=encoded.input_ids))
        our_images = ours.encode_image(images)[0]
        our_texts = ours.encode_text(encoded.input_ids)
    torch.testing.assert_close(hf_images, our_images, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hf_texts, our_texts, atol=1e-4, rtol=1e-4)
    image_processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    assert image_processor.max_num_patches == 64 and image_processor.patch_size == 8


def test_naflex_inputs_of_another_shape_match_too(exported):
    """The position grid is resized per image in both: a 3x5-patch image gives equal outputs."""
    import transformers

    folder, ours = exported
    hf_model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    image = torch.randn(1, 3, 24, 40)
    patches, coords = patchify(image, 8)
    with torch.no_grad():
        theirs = features(
            hf_model.get_image_features(
                pixel_values=patches,
                pixel_attention_mask=torch.ones(1, 15, dtype=torch.long),
                spatial_shapes=torch.tensor([[3, 5]]),
            )
        )
        mine = ours.encode_image(patches=patches, patch_coords=coords)[0]
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=1e-4)


def test_random_siglip2_folder_imports_as_a_checkpoint_with_the_same_embeddings(tmp_path):
    import transformers

    config = transformers.Siglip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "patch_size": 4,
            "num_patches": 16,
        },
        text_config={
            "vocab_size": 100,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 16,
        },
    )
    torch.manual_seed(3)
    released = transformers.Siglip2Model(config).eval()
    with torch.no_grad():
        released.logit_scale.fill_(2.0)
        released.logit_bias.fill_(-7.0)
    released.save_pretrained(tmp_path / "siglip2")
    write_word_tokenizer(tmp_path / "siglip2" / "tokenizer.json")
    assert (
        main(["import-siglip2", "--hf", str(tmp_path / "siglip2"), "--out", str(tmp_path / "run")])
        == 0
    )
    step = tmp_path / "run" / "checkpoints" / "step_00000000"
    ours = load_trained_model(step)
    assert json.loads((step / "config.json").read_text())["model"]["distill"] is None
    images = torch.randn(2, 3, 16, 16)
    tokens = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(
            ours.encode_image(images)[0],
            features(released.get_image_features(**pixel_inputs(images, 4))),
            atol=1e-4,
            rtol=1e-4,
        )
        torch.testing.assert_close(
            ours.encode_text(tokens),
            features(released.get_text_features(input_ids=tokens)),
            atol=1e-4,
            rtol=1e-4,
        )
    assert ours.logit_scale.item() == pytest.approx(2.0)
    assert ours.logit_bias.item() == pytest.approx(-7.0)
    # Evaluation tokenizes with the released model's own tokenizer, copied beside the weights.
    tokenizer = tokenizer_for_checkpoint(step, context_length=6)
    assert tokenizer.encode("A red circle").tolist() == [[3, 4, 2, 1, 1, 1]]


def write_word_tokenizer(path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "red": 4}
    tokenizer = HFTokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(path))


def test_import_of_a_folder_without_config_names_it(tmp_path, capsys):
    assert main(["import-siglip2", "--hf", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert str(tmp_path) in capsys.readouterr().err
