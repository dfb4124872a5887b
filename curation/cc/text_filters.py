"""Cheap text-quality filters for alt/title texts, each a named drop reason in the stats.

The web's alt texts are often not captions: file names ("IMG_0042.jpg"), UI words ("click here",
"logo"), a single word. These rules drop the obvious ones before anything is downloaded. The
defaults follow DataComp's basic filter (more than 2 words is their bar; we use at least 2 and
5 characters so short but real captions like "red bicycle" stay). Language is decided by the page's
declared `<html lang>` when it has one, else by resiliparse's offline detector on the text itself;
the language filter is off unless `languages` is set. `TextFilters.disabled()` keeps every
non-empty text (`--no-text-filters`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resiliparse.parse.lang import detect_fast

# Detector ranks above this are mostly wrong guesses on short strings (resiliparse's docs: >1200).
LANGUAGE_RANK_CUTOFF = 1200

BOILERPLATE_TEXTS = frozenset(
    {
        "click here",
        "click to enlarge",
        "read more",
        "more",
        "image",
        "img",
        "picture",
        "photo",
        "pic",
        "logo",
        "icon",
        "banner",
        "spacer",
        "placeholder",
        "thumbnail",
        "untitled",
        "loading",
        "blank",
        "null",
        "undefined",
        "none",
        "image not found",
        "no image",
        "default image",
        "advertisement",
        "ad",
        "button",
        "arrow",
        "avatar",
        "profile picture",
        "close",
        "menu",
    }
)
_FILE_NAME = re.compile(
    r"""^\S*\.(?:jpe?g|png|gif|webp|bmp|svg|tiff?|avif|heic)$   # ends like an image file
      | ^(?:img|dsc|dscn|dcim|pxl|photo|image|screenshot)[\s_-]?\d+\S*$  # camera / tool names
      | ^[\w-]*\d[\w-]*_[\w-]+$ | ^[\w]+-[\w]+-[\w-]*\d[\w-]*$  # slug with digits, no spaces
    """,
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class TextFilters:
    enabled: bool = True
    min_words: int = 2
    min_chars: int = 5
    max_chars: int = 1000
    languages: tuple[str, ...] | None = None

    @classmethod
    def disabled(cls) -> TextFilters:
        return cls(enabled=False)

    def rejection(self, text: str, lang: str | None) -> str | None:
        """The drop reason for `text` (already whitespace-collapsed), or None to keep it."""
        if not self.enabled:
            return None
        if len(text) < self.min_chars:
            return "text_too_short"
        if len(text) > self.max_chars:
            return "text_too_long"
        lowered = text.lower().strip(" .!:-|")
        if lowered in BOILERPLATE_TEXTS:
            return "text_boilerplate"
        if _FILE_NAME.match(lowered):
            return "text_file_name"
        if _word_count(text) < self.min_words:
            return "text_too_few_words"
        if self.languages is not None and lang not in self.languages:
            return "text_language"
        return None

    @staticmethod
    def detect_language(text: str) -> str | None:
        language, rank = detect_fast(text, cutoff=LANGUAGE_RANK_CUTOFF)
        return None if language == "unknown" or rank > LANGUAGE_RANK_CUTOFF else language


def _word_count(text: str) -> int:
    """Words for space-separated scripts; CJK text (no spaces) counts one word per ~2 characters."""
    words = text.split()
    if len(words) == 1 and not text.isascii():
        cjk = sum(1 for ch in text if "\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af")
        return max(1, cjk // 2) if cjk else 1
    return len(words)
