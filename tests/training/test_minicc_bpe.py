"""The tiny preset's shipped tokenizer (training/tokenizers/minicc_bpe.json): loads offline by
name, round-trips any text, keeps the mini web's captions short, and exports to the Hugging Face
files open_clip and transformers read, with the same ids."""

import pytest
import torch

from tests.training.test_tokenizer import load_offline
from training.config import load_args
from training.models.config import model_config
from training.tokenizer import BUNDLED_DIR, Tokenizer, clean_text, resolve_tokenizer_file

CAPTIONS = [
    "a pentagon, an ellipse and a triangle",
    "the small red star at the top left",
    "круг, звезда и кольцо",
    "円と星と六角形",
    "IMG_2041.jpg",
]
TINY_TEXT = model_config("tiny").text.context_length


@pytest.fixture(scope="module")
def minicc_tokenizer():
    return load_offline(
        "the shipped tokenizer",
        lambda: Tokenizer.from_file(load_args("tiny").model.tokenizer, context_length=TINY_TEXT),
    )


def test_tiny_preset_names_the_shipped_file():
    name = load_args("tiny").model.tokenizer
    assert resolve_tokenizer_file(name) == BUNDLED_DIR / name


def test_an_unknown_name_lists_the_shipped_tokenizers():
    with pytest.raises(FileNotFoundError, match="minicc_bpe.json"):
        resolve_tokenizer_file("no_such_tokenizer.json")


def test_vocabulary_is_small_with_box_and_task_tokens_after_it(minicc_tokenizer):
    assert minicc_tokenizer.box_token_offset <= 2048
    assert (
        minicc_tokenizer.vocab_size == minicc_tokenizer.box_token_offset + 1000 + 3
    )  # default bins


@pytest.mark.parametrize("text", [*CAPTIONS, "Any text at all: ünïcode, 123, emoji 🙂"])
def test_text_round_trips_cleaned(minicc_tokenizer, text):
    ids = minicc_tokenizer.text_ids(text)
    assert minicc_tokenizer.decode(ids) == clean_text(text)


def test_captions_of_the_mini_web_fit_the_tiny_context(minicc_tokenizer):
    # The longest good caption the world writes (three kinds) takes 8 tokens, a referring
    # phrase 10; the longest texts are long empty alts (up to ~43 of tiny's 64).
    assert len(minicc_tokenizer.text_ids(CAPTIONS[0])) <= 8
    for caption in CAPTIONS[1:]:
        assert len(minicc_tokenizer.text_ids(caption)) <= 10
    tokens = minicc_tokenizer.encode(CAPTIONS)
    assert tokens.shape == (len(CAPTIONS), TINY_TEXT)
    assert torch.all(tokens[:, -1] == minicc_tokenizer.eos_id)


def test_exported_tokenizer_files_give_the_same_ids(minicc_tokenizer, tmp_path):
    from transformers import PreTrainedTokenizerFast

    from training.export.tokenizer_files import save_tokenizer_files

    save_tokenizer_files(minicc_tokenizer, tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    theirs = loaded(CAPTIONS, padding="max_length", max_length=TINY_TEXT, truncation=True)[
        "input_ids"
    ]
    assert torch.equal(torch.tensor(theirs), minicc_tokenizer.encode(CAPTIONS))


def test_a_checkpoint_of_the_tiny_preset_gets_its_tokenizer_back(tmp_path):
    import json

    from training.config import to_dict
    from training.run_folder import tokenizer_for_checkpoint
    from training.trainer import make_tokenizer

    args = load_args("tiny")
    assert args.model.box_bins == 64
    trained = make_tokenizer(args.model.tokenizer, args.model.box_bins)
    (tmp_path / "config.json").write_text(json.dumps({"model": {}, "train": to_dict(args)}))
    restored = tokenizer_for_checkpoint(tmp_path, context_length=TINY_TEXT)
    assert restored.vocab_size == trained.vocab_size == trained.box_token_offset + 64 + 3
    assert restored.box_tokens((0.1, 0.2, 0.5, 0.9)) == trained.box_tokens((0.1, 0.2, 0.5, 0.9))
    assert torch.equal(restored.encode(CAPTIONS), trained.encode(CAPTIONS, TINY_TEXT))


def test_open_clip_export_of_a_model_on_the_shipped_tokenizer_tokenizes_like_ours(tmp_path):
    import open_clip

    from training.export.openclip import export_open_clip
    from training.models.config import model_config
    from training.models.siglip import SigLIP2
    from training.trainer import make_tokenizer

    args = load_args("tiny")
    tokenizer = make_tokenizer(args.model.tokenizer, args.model.box_bins)
    torch.manual_seed(0)
    model = SigLIP2(model_config("tiny", **{"text.vocab_size": tokenizer.vocab_size})).eval()
    exported = export_open_clip(model.state_dict(), model.cfg, tmp_path, tokenizer)
    theirs, _, _ = open_clip.create_model_and_transforms(exported.open_clip_name())
    # Our tokenizer cleans as open_clip does (ftfy turns the Japanese caption's full-width
    # "（：）" into ASCII, HTML entities are unescaped, whitespace collapses).
    texts = [*CAPTIONS, "Two  BLUE squares,\ton grass", "a &amp; b &quot;c&quot;", "cafÃ©"]
    ids = open_clip.get_tokenizer(exported.open_clip_name())(texts)
    assert torch.equal(ids, tokenizer.encode(texts, model.cfg.text.context_length))
    with torch.no_grad():
        torch.testing.assert_close(
            theirs.eval().encode_text(ids), model.encode_text(ids), atol=1e-5, rtol=1e-4
        )
