"""Our tokenizer as a Hugging Face `tokenizers` object, saved as tokenizer files.

The text tower was trained on `training.tokenizer.Tokenizer` ids: lowercased CLIP BPE, then the
EOS id, then EOS padding (no start token), with 1000 box tokens and the LocCa task tokens
appended to the vocabulary. Exported models must see exactly those ids, so the files written
here rebuild that framing with `tokenizers` building blocks (a byte-level BPE whose words end
in "</w>", a post-processor that appends EOS, EOS as the padding token). Both `transformers`
(AutoTokenizer) and open_clip (its HFTokenizer, used for `local-dir:` models) read them offline.

A tokenizer read from a tokenizer.json (e.g. the `tiny` preset's minicc BPE) is exported as that
file with the same additions: the cleaning normalisers in front of its own, the box and task
tokens, and an EOS-appending post-processor.

Cleaning: our tokenizer cleans with open_clip's "lower" function (`training.tokenizer.clean_text`)
and the open_clip export names that same function, so open_clip gives our ids on every text. A
tokenizer.json alone cannot run ftfy or html.unescape; its normaliser does the rest of that
cleaning (ftfy's one-character fixes from its own tables, NFC, whitespace collapsed and stripped,
lowercase), which is what transformers applies. Texts with mojibake or HTML entities ("cafÃ©",
"&amp;") get other ids through transformers than through ours or open_clip.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

from training.tokenizer import TASKS, Tokenizer, box_token_name, task_token_name

# CLIP's word split, applied after lowercasing (open_clip's SimpleTokenizer pattern).
_CLIP_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
START_TOKEN, END_TOKEN = "<start_of_text>", "<end_of_text>"
END_OF_WORD = "</w>"


def _clip_bpe_model() -> BPE:
    from open_clip.tokenizer import SimpleTokenizer

    clip = SimpleTokenizer(clean="lower")
    merges = sorted(clip.bpe_ranks, key=clip.bpe_ranks.__getitem__)
    return BPE(
        vocab=dict(clip.encoder),
        merges=list(merges),
        end_of_word_suffix=END_OF_WORD,
        continuing_subword_prefix="",
        fuse_unk=False,
    )


def _character_fixes() -> list[normalizers.Normalizer]:
    """ftfy's one-character fixes, from ftfy's own tables, in fix_text's order: Latin
    ligatures, character width (full-width ASCII, half-width katakana), curly quotes, control
    characters removed."""
    from ftfy.chardata import CONTROL_CHARS, DOUBLE_QUOTE_RE, LIGATURES, SINGLE_QUOTE_RE, WIDTH_MAP

    replacements = [
        (chr(code), text) for table in (LIGATURES, WIDTH_MAP) for code, text in table.items()
    ]
    replacements += [(Regex(SINGLE_QUOTE_RE.pattern), "'"), (Regex(DOUBLE_QUOTE_RE.pattern), '"')]
    replacements += [(chr(code), "") for code in CONTROL_CHARS]
    return [normalizers.Replace(pattern, text) for pattern, text in replacements]


def _cleaning() -> list[normalizers.Normalizer]:
    """`clean_text` as far as `tokenizers` can express it: ftfy's one-character fixes, NFC (ftfy's
    final normalisation), whitespace collapsed and stripped, lowercase. ftfy's mojibake repair
    and HTML unescaping cannot be expressed."""
    return [
        *_character_fixes(),
        normalizers.NFC(),
        normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Strip(),
        normalizers.Lowercase(),
    ]


def _clip_hf_tokenizer() -> HFTokenizer:
    hf = HFTokenizer(_clip_bpe_model())
    hf.normalizer = normalizers.Sequence(_cleaning())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_WORD_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.Sequence(
        [decoders.Replace(END_OF_WORD, " "), decoders.ByteLevel(), decoders.Strip(" ", 0, 1)]
    )
    hf.add_special_tokens([START_TOKEN, END_TOKEN])
    return hf


def _file_hf_tokenizer(path: Path, exported: bool) -> HFTokenizer:
    hf = HFTokenizer.from_file(str(path))
    if not exported:  # an export of ours already starts with the cleaning
        # Tokenizer.text_ids cleans the text before the file's own normaliser runs.
        own = [hf.normalizer] if hf.normalizer is not None else []
        hf.normalizer = normalizers.Sequence([*_cleaning(), *own])
    return hf


def build_hf_tokenizer(tokenizer: Tokenizer) -> HFTokenizer:
    """A `tokenizers.Tokenizer` whose `encode(text).ids` equal `tokenizer.encode(text)` (without
    the padding, which the caller requests with padding="max_length")."""
    exported = tokenizer.carries_extras
    hf = _file_hf_tokenizer(tokenizer.file, exported) if tokenizer.file else _clip_hf_tokenizer()
    expected_size = tokenizer.vocab_size if exported else tokenizer.box_token_offset
    if hf.get_vocab_size(with_added_tokens=True) != expected_size:
        raise ValueError(
            f"the rebuilt vocabulary has {hf.get_vocab_size(with_added_tokens=True)} ids, the "
            f"tokenizer {expected_size}"
        )
    if not exported:
        # Added tokens take the next free ids, in order: box bins, then LocCa task tokens.
        hf.add_special_tokens([box_token_name(i) for i in range(tokenizer.box_bins)])
        hf.add_special_tokens([task_token_name(task) for task in TASKS])
    for name, expected in (
        (box_token_name(0), tokenizer.box_token_offset),
        (task_token_name(TASKS[0]), tokenizer.task_token_offset),
    ):
        if hf.token_to_id(name) != expected:
            raise AssertionError(f"{name} got id {hf.token_to_id(name)}, expected {expected}")
    eos = hf.id_to_token(tokenizer.eos_id)
    hf.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, tokenizer.eos_id)]
    )
    return hf


def save_tokenizer_files(
    tokenizer: Tokenizer, folder: Path, context_length: int | None = None
) -> list[Path]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `folder`
    (offline); `context_length` (default: the tokenizer's) is the text tower's position count.
    Returns the written paths."""
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    hf = build_hf_tokenizer(tokenizer)
    eos = hf.id_to_token(tokenizer.eos_id)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=hf,
        eos_token=eos,
        pad_token=eos,
        model_max_length=context_length or tokenizer.context_length,
        padding_side="right",
        truncation_side="right",
        # The text tower attends to its EOS padding, as in training: no attention mask.
        model_input_names=["input_ids"],
    )
    return [Path(name) for name in wrapped.save_pretrained(str(folder))]
