"""The grounding mix: which sources feed the trainer's grounding stream, and how much of each.

A mix file (YAML or JSON) maps each source to its shards and its share:

    sources:
      openimages:   {shards: /data/grounding/openimages/*.tar, repeat: 1.0}
      visualgenome: {shards: /data/grounding/vg/*.tar, repeat: 0.5}
      refcoco:      {shards: /data/grounding/refcoco/*.tar, repeat: 3, max_samples: 100000}

`repeat` is how many passes over the source one pass of the grounding stream makes (0.5 = half
its shards, 3 = each shard three times); `max_samples` is a quota, honoured by the converter
(`python -m curation grounding --mix-config`, which also records `samples` and `licence`) and
again here at whole-shard granularity. `grounding_mix_shards` turns the file into the shard list
the trainer's `data.grounding_shards` takes: its consumers shuffle and split that list, so the
repeats become the per-source sampling rates.

`python -m training train --grounding MIX.yaml` reads it directly; the curation converters write it
through this module (the trainer never imports `curation`; curation may import the trainer's).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.parquet as pq
import yaml


class MixConfigError(ValueError):
    """The mix file is not a valid mix config (the message names the file and the entry)."""


@dataclass(frozen=True)
class MixEntry:
    source: str
    shards: str
    repeat: float = 1.0
    max_samples: int | None = None
    samples: int | None = None
    licence: str | None = None


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        document = json.loads(text) if where.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise MixConfigError(f"{where}: cannot parse the mix config: {exc}") from None
    return document or {}


def read_mix(url: str) -> dict[str, MixEntry]:
    """The mix file's entries by source; a missing file is an empty mix."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return {}
    with fs.open(path, "r", encoding="utf-8") as handle:
        document = _parse(handle.read(), url)
    sources = document.get("sources") if isinstance(document, dict) else None
    if not isinstance(sources, dict):
        raise MixConfigError(
            f"{url}: a mix config is {{'sources': {{SOURCE: {{'shards': ..., 'repeat': ...}}}}}}"
        )
    entries = {}
    for source, spec in sources.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("shards"), str):
            raise MixConfigError(f"{url}: source {source!r} needs a 'shards' pattern")
        repeat = spec.get("repeat", 1.0)
        quota = spec.get("max_samples")
        if not isinstance(repeat, (int, float)) or repeat < 0 or not math.isfinite(repeat):
            raise MixConfigError(
                f"{url}: source {source!r}: repeat must be a number >= 0, got {repeat!r}"
            )
        if quota is not None and (not isinstance(quota, int) or quota < 0):
            raise MixConfigError(
                f"{url}: source {source!r}: max_samples must be a whole number >= 0"
            )
        entries[source] = MixEntry(
            str(source),
            spec["shards"],
            float(repeat),
            quota,
            spec.get("samples"),
            spec.get("licence"),
        )
    return entries


def write_mix(url: str, entries: dict[str, MixEntry]) -> None:
    sources = {}
    for source, entry in sorted(entries.items()):
        spec: dict[str, Any] = {"shards": entry.shards, "repeat": entry.repeat}
        for name in ("max_samples", "samples", "licence"):
            if getattr(entry, name) is not None:
                spec[name] = getattr(entry, name)
        sources[source] = spec
    document = {"sources": sources}
    text = (
        json.dumps(document, indent=1)
        if url.endswith(".json")
        else yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    )
    fs, path = fsspec.core.url_to_fs(url)
    tmp = f"{path}.tmp-mix"
    with fs.open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    fs.mv(tmp, path)


def _expand(pattern: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(pattern)
    matches = sorted(fs.glob(path)) if any(ch in path for ch in "*?[") else [path]
    urls = [fs.unstrip_protocol(m) if "://" in pattern else m for m in matches]
    if not urls or not all(fs.exists(m) for m in matches):
        raise FileNotFoundError(f"grounding mix: shards {pattern!r} match no files")
    return urls


def _samples_in(shard_url: str) -> int:
    """Samples in a grounding shard, from its Parquet index beside the tar."""
    index = shard_url[: -len(".tar")] + ".parquet"
    with fsspec.open(index, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def source_shards(entry: MixEntry) -> list[str]:
    """The source's shards, cut to its quota (whole shards, in order), then repeated."""
    shards = _expand(entry.shards)
    if entry.max_samples is not None:
        kept, total = [], 0
        for shard in shards:
            if total >= entry.max_samples:
                break
            kept.append(shard)
            total += _samples_in(shard)
        shards = kept
    whole, fraction = divmod(entry.repeat, 1.0)
    return shards * int(whole) + shards[: round(fraction * len(shards))]


def grounding_mix_shards(url: str) -> list[str]:
    """The shard list for the trainer's `data.grounding_shards`, with each source's repeats."""
    entries = read_mix(url)
    if not entries:
        raise MixConfigError(f"{url}: the grounding mix names no sources")
    return [shard for source in sorted(entries) for shard in source_shards(entries[source])]


def record_source(url: str, source: str, shards: str, samples: int, licence: str) -> MixEntry:
    """Add or refresh one source after conversion, keeping the repeat and quota a person set."""
    entries = read_mix(url)
    previous = entries.get(source, MixEntry(source, shards))
    entries[source] = MixEntry(
        source, shards, previous.repeat, previous.max_samples, samples, licence
    )
    write_mix(url, entries)
    return entries[source]
