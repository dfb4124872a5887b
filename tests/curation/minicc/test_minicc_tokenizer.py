"""The BPE the trainer ships for the tiny preset is exactly what `python -m curation minicc
tokenizer` writes: reproducible from the world's own text."""

from pathlib import Path

from curation.minicc.tokenizer import corpus, train_tokenizer

SHIPPED = Path(__file__).parents[3] / "training" / "tokenizers" / "minicc_bpe.json"


def test_corpus_is_deterministic_and_covers_every_language():
    first, second = list(corpus(scenes=20)), list(corpus(scenes=20))
    assert first == second
    assert any(" and a " in text for text in first)  # good captions of multi-shape scenes
    assert any("звезда" in text for text in first) and any("星" in text for text in first)


def test_shipped_tokenizer_is_rebuilt_byte_for_byte(tmp_path):
    rebuilt = train_tokenizer(tmp_path / "minicc_bpe.json")
    assert rebuilt.read_bytes() == SHIPPED.read_bytes()
