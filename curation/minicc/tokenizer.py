"""A small byte-level BPE vocabulary learned from the mini web's own text.

The `tiny` training preset reads captions of this world only; the 49k-token CLIP BPE spends most
of a CPU step on the LocCa output layer and the two vocabulary-sized embeddings, for words this
world never says. This module writes the text the world can produce (good captions in every
language and phrasing, grounding and referring phrases, noisy alt texts, the zero-shot
templates) and trains a byte-level BPE on it, so any string still encodes (bytes are the base
alphabet). The trainer ships the result as a file (training/tokenizers/); `training` never imports
this module.

    python -m curation minicc tokenizer --out training/tokenizers/minicc_bpe.json
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from curation.minicc.captions import (
    boilerplate_alt,
    empty_but_long_alt,
    filename_alt,
    good_caption,
    seo_alt,
)
from curation.minicc.evalsets import ZEROSHOT_TEMPLATES
from curation.minicc.pages import TITLE_NOISE
from curation.minicc.vocab import KINDS, LANGUAGES
from curation.minicc.world import ConceptSampler, sample_scene

EOS_TOKEN = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 1536
DEFAULT_SCENES = 6000


def corpus(seed: int = 0, scenes: int = DEFAULT_SCENES) -> Iterator[str]:
    """Every kind of text the world writes, from `scenes` seeded scenes (deterministic)."""
    concepts = ConceptSampler(seed)
    for index in range(scenes):
        rng = np.random.default_rng([seed, 0x70C, index])
        scene = sample_scene(rng, f"tok-{index:06d}", concepts)
        for lang in LANGUAGES:
            yield good_caption(scene, lang)
        for shape in scene.shapes:
            yield shape.phrase
            yield shape.referring_expression
        yield filename_alt(rng, f"/img/{shape.colour}-{shape.kind}-{index}.jpg")
        yield boilerplate_alt(rng)
        yield seo_alt(rng)
        yield empty_but_long_alt(rng)
    yield from TITLE_NOISE
    yield from (template.format(c=kind) for template in ZEROSHOT_TEMPLATES for kind in KINDS)


def train_tokenizer(
    out: Path, vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0, scenes: int = DEFAULT_SCENES
) -> Path:
    """Train the byte-level BPE on `corpus` and write a Hugging Face tokenizer.json to `out`.
    Lowercasing is part of the file, as the trainer lowercases every text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator((text.lower() for text in corpus(seed, scenes)), trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    tokenizer.save(str(partial))
    partial.rename(out)
    return out
