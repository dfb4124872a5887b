"""Sensitive-attribute detection in captions from term lists a user can replace.

A term file is JSON: {"attribute": "gender", "values": {"female": [terms], "male": [terms]}}.
The default, `gender_terms.json` beside this module, is an English list; `--attribute-terms FILE`
replaces it (any attribute, any number of values, any language whose words are space-separated).
Terms are matched with the MetaCLIP matcher (`curation.metaclip.matching`) on the lower-cased
caption, so a term matches as a whole word or phrase. A caption gets the one value whose terms
it mentions, SEVERAL when it mentions terms of two or more values, NONE when it mentions none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from curation import fsio
from curation.metaclip.matching import EntryMatcher
from curation.stages.common import ConfigError

DEFAULT_TERMS = str(Path(__file__).with_name("gender_terms.json"))
NONE = "(none)"
SEVERAL = "(several)"
VALUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class AttributeTerms:
    attribute: str
    values: dict[str, tuple[str, ...]]  # value -> lower-case terms

    @property
    def names(self) -> list[str]:
        return list(self.values)

    def all_terms(self) -> set[str]:
        return {term for terms in self.values.values() for term in terms}


def load_terms(url: str = DEFAULT_TERMS) -> AttributeTerms:
    if not fsio.exists(url):
        raise ConfigError(f"attribute terms {url}: no such file")
    try:
        document = json.loads(fsio.read_bytes(url))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"attribute terms {url}: not JSON ({exc})") from exc
    values = document.get("values") if isinstance(document, dict) else None
    if not isinstance(values, dict) or len(values) < 2:
        raise ConfigError(f"attribute terms {url}: needs 'values' with at least two values")
    parsed: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for name, terms in values.items():
        if not VALUE_NAME.match(str(name)):
            raise ConfigError(f"attribute terms {url}: bad value name {name!r}")
        if not isinstance(terms, list) or not terms or not all(isinstance(t, str) for t in terms):
            raise ConfigError(f"attribute terms {url}: value {name} needs a list of terms")
        cleaned = tuple(dict.fromkeys(t.strip().lower() for t in terms if t.strip()))
        for term in cleaned:
            if term in seen and seen[term] != name:
                raise ConfigError(
                    f"attribute terms {url}: {term!r} is under {seen[term]} and {name}"
                )
            seen[term] = name
        parsed[str(name)] = cleaned
    return AttributeTerms(str(document.get("attribute", "attribute")), parsed)


class AttributeDetector:
    """One label per caption: a value name, SEVERAL or NONE."""

    def __init__(self, terms: AttributeTerms):
        self.terms = terms
        entries: list[str] = []
        owners: list[int] = []
        for index, values in enumerate(terms.values.values()):
            entries += values
            owners += [index] * len(values)
        self._matcher = EntryMatcher(entries)
        self._owner = np.asarray(owners, dtype=np.int64)
        self._labels = np.array([*terms.names, SEVERAL, NONE], dtype=object)

    def labels(self, texts: list[str | None]) -> list[str]:
        matched = self._matcher.match_batch([text.lower() if text else None for text in texts])
        lengths = pc.fill_null(pc.list_value_length(matched), 0).to_numpy()
        rows = np.repeat(np.arange(len(texts)), lengths)
        owners = self._owner[pc.list_flatten(matched).to_numpy(zero_copy_only=False)]
        values = len(self.terms.values)
        seen = np.zeros((len(texts), values), dtype=bool)
        seen[rows, owners] = True
        count = seen.sum(axis=1)
        index = np.where(count == 1, seen.argmax(axis=1), np.where(count > 1, values, values + 1))
        return self._labels[index].tolist()
