"""One text cleaning everywhere: on the mini web's own texts (captions in five languages,
referring phrases, noisy alt texts, zero-shot prompts) and on the issue's examples, open_clip's
tokenizer on an open_clip export and transformers' AutoTokenizer on an HF export give the ids
our tokenizer gives."""

import pytest
import torch

from training.config import load_args
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.trainer import make_tokenizer

ISSUE_TEXTS = ["Two  BLUE squares, on grass", "  a\tred\ncircle ", "ＦＵＬＬ width “quotes”"]


@pytest.fixture(scope="module")
def tiny_preset():
    args = load_args("tiny")
    tokenizer = make_tokenizer(args.model.tokenizer, args.model.box_bins)
    torch.manual_seed(1)
    cfg = model_config("tiny", distill=None, **{"text.vocab_size": tokenizer.vocab_size})
    return SigLIP2(cfg).eval(), tokenizer


@pytest.fixture(scope="module")
def mini_web_texts() -> list[str]:
    from curation.minicc.tokenizer import corpus

    return sorted(set(corpus(seed=11, scenes=60))) + ISSUE_TEXTS


def test_open_clip_tokenizer_on_the_export_gives_our_ids(tiny_preset, mini_web_texts, tmp_path):
    import open_clip

    from training.export.openclip import export_open_clip

    model, tokenizer = tiny_preset
    exported = export_open_clip(model.state_dict(), model.cfg, tmp_path, tokenizer)
    theirs = open_clip.get_tokenizer(exported.open_clip_name())(mini_web_texts)
    assert torch.equal(theirs, tokenizer.encode(mini_web_texts, model.cfg.text.context_length))


def test_auto_tokenizer_on_the_hf_export_gives_our_ids(tiny_preset, mini_web_texts, tmp_path):
    import transformers

    from training.export.hf import export_hf

    model, tokenizer = tiny_preset
    export_hf(model.state_dict(), model.cfg, tmp_path, tokenizer)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    length = model.cfg.text.context_length
    ids = loaded(mini_web_texts, padding="max_length", max_length=length, truncation=True)
    assert torch.equal(torch.tensor(ids["input_ids"]), tokenizer.encode(mini_web_texts, length))
