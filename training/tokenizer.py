"""Offline tokenizer for the text tower and the LocCa decoder.

Default: the CLIP BPE vocabulary that open_clip ships inside its package (no network). Any local
Hugging Face `tokenizer.json` (e.g. Gemma's) loads with `Tokenizer.from_file`; a bare file name
that is not a file in the working directory names one shipped in training/tokenizers/ (the `tiny`
preset's `minicc_bpe.json`, a 1.5k byte-level BPE of the mini web's text, written by
`python -m curation minicc tokenizer`). Both clean the text with `clean_text` (open_clip's
"lower" cleaning: ftfy, HTML unescaping, whitespace collapsed, lowercase), the one cleaning that
training, scoring and every export share, and pad with the EOS id ("sticky EOS"), so the text
tower's last position is always EOS.

The vocabulary is extended past the base tokenizer with quantised box-coordinate tokens and
task-prefix tokens for LocCa; `vocab_size` counts them, and the model's embedding tables must use it.
A tokenizer.json that one of our exports wrote already holds them (`<box_0000>`…, `<task_…>`):
its base vocabulary ends where they start and its box bins are the ones it holds, so an imported
or re-exported checkpoint gets the same ids, not a second set.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

TASKS: tuple[str, ...] = ("caption", "aref", "gcap")
BOX_FORMATS: tuple[str, ...] = ("xyxy", "yxyx")
DEFAULT_CONTEXT_LENGTH = 64
DEFAULT_BOX_BINS = 1000
BUNDLED_DIR = Path(__file__).parent / "tokenizers"
# EOS names tried, in order, when a tokenizer.json is loaded without an explicit eos_token.
_EOS_CANDIDATES = ("<eos>", "</s>", "<|endoftext|>", "<end_of_text>", "[SEP]")


def clean_text(text: str) -> str:
    """open_clip's "lower" cleaning (`open_clip.tokenizer.get_clean_fn("lower")`): ftfy's text
    repair, HTML entities unescaped twice, runs of whitespace collapsed to one space, stripped,
    lowercased. Exports name the same cleaning, so open_clip's tokenizer gives our ids.

    The steps are spelled out here rather than imported: importing open_clip's tokenizer imports
    all of open_clip (~4 s of CPU), which every training, eval and data-loader process paid on
    its first caption. tests/training/test_tokenizer.py holds it equal to open_clip's function."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def box_token_name(index: int) -> str:
    return f"<box_{index:04d}>"


def task_token_name(task: str) -> str:
    return f"<task_{task}>"


class _BaseTokenizer(Protocol):
    vocab_size: int
    eos_id: int

    def encode_plain(self, text: str) -> list[int]: ...

    def decode_plain(self, ids: Sequence[int]) -> str: ...


class _ClipBpe:
    """open_clip's CLIP BPE, without its start/end framing (we frame sequences ourselves); its
    "lower" cleaning is `clean_text`."""

    def __init__(self) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self._bpe = SimpleTokenizer(clean="lower")
        self.vocab_size = len(self._bpe.encoder)
        self.eos_id = self._bpe.encoder["<end_of_text>"]

    def encode_plain(self, text: str) -> list[int]:
        return self._bpe.encode(text)

    def decode_plain(self, ids: Sequence[int]) -> str:
        return self._bpe.decode([i for i in ids if i < self.vocab_size]).strip()


class _HuggingFaceFile:
    def __init__(self, path: Path, eos_token: str | None) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._tokenizer = HFTokenizer.from_file(str(path))
        except Exception as error:  # the tokenizers library raises a bare Exception subclass
            raise ValueError(f"cannot load tokenizer file {path}: {error}") from error
        self.path = path
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        # Box and task tokens that an export of ours added: the base vocabulary stops before them.
        self.box_bins = 0
        first_box = self._tokenizer.token_to_id(box_token_name(0))
        if first_box is not None:
            while self._tokenizer.token_to_id(box_token_name(self.box_bins)) is not None:
                self.box_bins += 1
            expected = [first_box + self.box_bins + i for i in range(len(TASKS))]
            found = [self._tokenizer.token_to_id(task_token_name(task)) for task in TASKS]
            if found != expected or first_box + self.box_bins + len(TASKS) != self.vocab_size:
                raise ValueError(
                    f"tokenizer file {path}: its box/task tokens are not the {self.box_bins} box "
                    f"tokens then {list(TASKS)} at the end of the vocabulary"
                )
            self.vocab_size = first_box
        names = (eos_token,) if eos_token else _EOS_CANDIDATES
        ids = [self._tokenizer.token_to_id(name) for name in names]
        found = [i for i in ids if i is not None]
        if not found:
            raise ValueError(
                f"tokenizer file {path}: no EOS token among {list(names)}; pass eos_token="
            )
        self.eos_id = found[0]

    def encode_plain(self, text: str) -> list[int]:
        return self._tokenizer.encode(clean_text(text), add_special_tokens=False).ids

    def decode_plain(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode([i for i in ids if i < self.vocab_size]).strip()


def resolve_tokenizer_file(path: str | Path) -> Path:
    """`path` if it is a file, else the shipped tokenizer of that name in training/tokenizers/."""
    path = Path(path)
    if path.is_file():
        return path
    bundled = BUNDLED_DIR / path
    if path.name == str(path) and bundled.is_file():
        return bundled
    shipped = sorted(p.name for p in BUNDLED_DIR.glob("*.json"))
    raise FileNotFoundError(f"tokenizer file not found: {path} (shipped: {', '.join(shipped)})")


class Tokenizer:
    def __init__(
        self,
        base: _BaseTokenizer | None = None,
        *,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        box_bins: int = DEFAULT_BOX_BINS,
        box_format: str = "xyxy",
    ) -> None:
        if box_format not in BOX_FORMATS:
            raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")
        if box_bins < 2:
            raise ValueError(f"box_bins must be at least 2, got {box_bins}")
        self._base = base if base is not None else _ClipBpe()
        self.context_length = context_length
        self.box_bins = box_bins
        self.box_format = box_format
        self.eos_id = self._base.eos_id
        self.box_token_offset = self._base.vocab_size
        self.task_token_offset = self.box_token_offset + box_bins
        self.vocab_size = self.task_token_offset + len(TASKS)

    @classmethod
    def from_file(cls, path: str | Path, *, eos_token: str | None = None, **kwargs) -> Tokenizer:
        """A tokenizer from a local Hugging Face `tokenizer.json` (never a hub id). A file our
        export wrote keeps its box/task tokens, and with them its box bins."""
        base = _HuggingFaceFile(resolve_tokenizer_file(path), eos_token)
        if base.box_bins:
            if kwargs.get("box_bins", base.box_bins) != base.box_bins:
                raise ValueError(
                    f"tokenizer file {path} holds {base.box_bins} box tokens, not "
                    f"box_bins={kwargs['box_bins']}"
                )
            kwargs["box_bins"] = base.box_bins
        return cls(base, **kwargs)

    @property
    def carries_extras(self) -> bool:
        """Whether the tokenizer file already holds the box and task tokens (an export of ours)."""
        return bool(getattr(self._base, "box_bins", 0))

    @property
    def file(self) -> Path | None:
        """The tokenizer.json this tokenizer reads, or None for the default CLIP BPE."""
        return getattr(self._base, "path", None)

    # -- text ---------------------------------------------------------------------------------
    def text_ids(self, text: str) -> list[int]:
        """BPE ids of `clean_text(text)`, no special tokens."""
        return self._base.encode_plain(text)

    def encode(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        """[B, L] ids: text, then EOS, then EOS padding. Text too long is cut so EOS stays last."""
        length = context_length or self.context_length
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), length), self.eos_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.text_ids(text)[: length - 1]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids up to the first EOS; box and task tokens are skipped."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self._base.decode_plain(ids)

    # -- LocCa extras -------------------------------------------------------------------------
    def task_token(self, task: str) -> int:
        if task not in TASKS:
            raise ValueError(f"unknown LocCa task {task!r}; choose from {TASKS}")
        return self.task_token_offset + TASKS.index(task)

    def is_box_token(self, token_id: int) -> bool:
        return self.box_token_offset <= token_id < self.task_token_offset

    def box_tokens(self, box: Sequence[float]) -> list[int]:
        """Four coordinate tokens for a normalised (x0, y0, x1, y1) box, in `box_format` order."""
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"box must be 4 finite numbers, got {box!r}")
        x0, y0, x1, y1 = box
        ordered = (x0, y0, x1, y1) if self.box_format == "xyxy" else (y0, x0, y1, x1)
        return [self.box_token_offset + self._quantise(v) for v in ordered]

    def decode_box(self, token_ids: Sequence[int]) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) from the first four box tokens (bin centres), or None if there are
        fewer than four."""
        bins = [t - self.box_token_offset for t in token_ids if self.is_box_token(int(t))][:4]
        if len(bins) < 4:
            return None
        a, b, c, d = ((v + 0.5) / self.box_bins for v in bins)
        return (a, b, c, d) if self.box_format == "xyxy" else (b, a, d, c)

    def _quantise(self, value: float) -> int:
        return min(max(math.floor(value * self.box_bins), 0), self.box_bins - 1)
