import socket

import pytest
import torch

from training.models.config import TextConfig
from training.tokenizer import TASKS, Tokenizer, clean_text


def load_offline(what: str, load):
    """`load()` with every attempt to open a network connection failing the test."""
    original = socket.socket.connect

    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} tried to use the network")

    socket.socket.connect = refuse
    try:
        return load()
    finally:
        socket.socket.connect = original


@pytest.fixture(scope="module")
def clip_tokenizer():
    return load_offline("the default tokenizer", Tokenizer)


def test_default_vocabulary_is_clip_bpe_plus_box_and_task_tokens(clip_tokenizer):
    assert clip_tokenizer.box_token_offset == 49408
    assert clip_tokenizer.vocab_size == 49408 + 1000 + len(TASKS)
    assert TextConfig().vocab_size == clip_tokenizer.vocab_size


def test_encode_lowercases_and_pads_with_sticky_eos(clip_tokenizer):
    tokens = clip_tokenizer.encode(["A Red SQUARE", "a red square"])
    assert tokens.shape == (2, 64) and tokens.dtype == torch.long
    assert torch.equal(tokens[0], tokens[1])
    length = len(clip_tokenizer.text_ids("a red square"))
    assert torch.all(tokens[0, length:] == clip_tokenizer.eos_id)
    assert torch.all(tokens[0, :length] != clip_tokenizer.eos_id)
    assert clip_tokenizer.decode(tokens[0].tolist()) == "a red square"


def test_long_text_is_cut_so_the_last_position_is_still_eos(clip_tokenizer):
    tokens = clip_tokenizer.encode(" ".join(["word"] * 200), context_length=16)
    assert tokens.shape == (1, 16)
    assert tokens[0, -1] == clip_tokenizer.eos_id and tokens[0, -2] != clip_tokenizer.eos_id


@pytest.mark.parametrize("box_format", ["xyxy", "yxyx"])
def test_box_tokens_round_trip_within_half_a_bin(box_format):
    tokenizer = Tokenizer(box_format=box_format, box_bins=100)
    box = (0.123, 0.456, 0.789, 1.0)
    tokens = tokenizer.box_tokens(box)
    assert all(tokenizer.is_box_token(t) for t in tokens)
    first = tokens[0] - tokenizer.box_token_offset
    assert first == (12 if box_format == "xyxy" else 45)
    decoded = tokenizer.decode_box(tokens)
    assert all(abs(a - b) <= 0.5 / 100 + 1e-9 for a, b in zip(decoded, box, strict=True))
    assert tokenizer.decode_box(tokens[:3]) is None


def test_task_tokens_are_distinct_and_past_the_box_tokens(clip_tokenizer):
    ids = [clip_tokenizer.task_token(task) for task in TASKS]
    assert len(set(ids)) == len(TASKS) and min(ids) == clip_tokenizer.task_token_offset
    assert max(ids) == clip_tokenizer.vocab_size - 1
    with pytest.raises(ValueError, match="unknown LocCa task"):
        clip_tokenizer.task_token("vqa")


def test_tokenizer_json_file_loads_by_path_with_its_own_eos(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, "a": 3, "red": 4, "square": 5}
    hf = HFTokenizer(WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = Whitespace()
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))

    tokenizer = Tokenizer.from_file(path, box_bins=10)
    assert tokenizer.eos_id == 1 and tokenizer.vocab_size == 6 + 10 + len(TASKS)
    assert tokenizer.encode("A Red Square", context_length=6)[0].tolist() == [3, 4, 5, 1, 1, 1]
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_file(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="no EOS token"):
        Tokenizer.from_file(path, eos_token="</s>")


ISSUE_TEXTS = ["Two  BLUE squares, on grass", "a &amp; b", "cafÃ©  au lait", "  tabs\tand\nlines "]


def test_one_cleaning_is_open_clips_lower_cleaning(minicc_world):
    import pyarrow.parquet as pq
    from open_clip.tokenizer import SimpleTokenizer

    assert clean_text("Two  BLUE squares, on grass") == "two blue squares, on grass"
    assert clean_text("a &amp;amp; b") == "a & b"
    assert clean_text("cafÃ©") == "café"
    theirs = SimpleTokenizer(clean="lower")
    # Texts that ftfy, the unescaping and the whitespace rules each change, then every alt text
    # and title of the tiny mini web (captions, boilerplate, file names, other languages).
    texts = ISSUE_TEXTS + [
        "\u00a0non-breaking\u2003spaces\u200b and Ã¼mlaut",
        "&lt;b&gt;bold&lt;/b&gt; &#39;quoted&#39; &amp;lt;twice&amp;gt;",
        "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ, “curly” quotes…",
        "\r\n\t mixed \x0b\x0c controls ",
        "ΣΊΣΥΦΟΣ İstanbul ß ﬁ",
        "",
    ]
    truth = pq.read_table(minicc_world / "truth.parquet", columns=["alt", "title"])
    texts += sorted({t for column in truth.columns for t in column.to_pylist() if t})
    assert len(texts) > 100
    assert [clean_text(t) for t in texts] == [theirs.clean_fn(t) for t in texts]


def test_a_tokenizer_file_cleans_like_the_default_tokenizer(tmp_path):
    from training.tokenizer import BUNDLED_DIR

    tokenizer = Tokenizer.from_file(BUNDLED_DIR / "minicc_bpe.json")
    for text in ISSUE_TEXTS:
        assert tokenizer.text_ids(text) == tokenizer.text_ids(clean_text(text))
    assert tokenizer.text_ids("Two  BLUE squares") == tokenizer.text_ids("two blue squares")
