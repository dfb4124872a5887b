"""Where a balance run reads and writes, and when earlier passes must be redone.

Inputs are any Parquet dataset (a folder, a glob, a list) or a pool (a folder of
`{5-digit shard}.parquet` sidecars beside `{shard}.tar` WebDataset shards). A pool keeps its shard
ids and gets its curation columns in POOL/curation/balance; any other dataset gets a stable shard
id per file (its file name when those are unique and safe, else its index in the sorted list),
and the id -> file list is saved in OUT/_inputs.json so a re-run over other files is refused.

The passes (match, reduce, sample) each leave done markers. OUT/_config.json remembers what
produced them: new metadata or text columns redo every pass, a new t or seed redoes only the
sampling, which is the cheap re-run MetaCLIP's "rebalance with another t" needs.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from curation import fsio
from curation.runner import ShardTask
from curation.stages.common import ConfigError
from curation.stats import stats_dir

POOL_SHARD = re.compile(r"^\d{5}$")
SAFE_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ENTRY_COUNTS = "entry_counts.parquet"
SUMMARY = "balance_summary.json"
# Files a balance run writes into its own folder: never inputs when that folder is read back.
OWN_FILES = (ENTRY_COUNTS,)


@dataclass(frozen=True)
class BalanceInputs:
    tasks: tuple[ShardTask, ...]
    pool_dir: str | None  # set when the input is a download pool

    @property
    def is_pool(self) -> bool:
        return self.pool_dir is not None


def resolve_inputs(spec: str | list[str]) -> BalanceInputs:
    """The input shards named by a folder, a glob or a list of Parquet URLs."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    folders: list[str] = []
    for item in specs:
        if not any(char in item for char in "*?[{") and not item.endswith(".parquet"):
            folders.append(item.rstrip("/"))
            urls.extend(fsio.expand(fsio.join(item, "*.parquet")))
        else:
            urls.extend(fsio.expand(item))
    urls = sorted({url for url in urls if _is_input_file(url)})
    if not urls:
        raise ConfigError(f"balance: no Parquet files in {', '.join(specs)}")
    stems = [posixpath.splitext(posixpath.basename(url))[0] for url in urls]
    if (
        len(folders) == 1
        and len(specs) == 1
        and all(POOL_SHARD.match(s) for s in stems)
        and fsio.exists(fsio.join(folders[0], f"{stems[0]}.tar"))
    ):
        return BalanceInputs(tuple(ShardTask(s, (u,)) for s, u in zip(stems, urls)), folders[0])
    if len(set(stems)) == len(stems) and all(SAFE_SHARD_NAME.match(s) for s in stems):
        ids = stems
    else:
        ids = [f"{index:05d}" for index in range(len(urls))]
    return BalanceInputs(tuple(ShardTask(i, (u,)) for i, u in zip(ids, urls)), None)


def _is_input_file(url: str) -> bool:
    name = posixpath.basename(url)
    return not name.startswith(("_", ".")) and name not in OWN_FILES and fsio.TMP_MARK not in name


def default_out_dir(inputs: BalanceInputs) -> str:
    if not inputs.is_pool:
        raise ConfigError("balance: --out is required unless --input is a download pool")
    return fsio.join(inputs.pool_dir, "curation", "balance")


def check_input_list(out_dir: str, inputs: BalanceInputs) -> None:
    """Refuse to mix runs: the shard ids in OUT must map to the same input files as before."""
    url = fsio.join(out_dir, "_inputs.json")
    current = {task.shard_id: task.inputs[0] for task in inputs.tasks}
    if fsio.exists(url):
        previous = fsio.read_json(url, expect=dict)
        changed = sorted(
            shard for shard in current if shard in previous and previous[shard] != current[shard]
        )
        if changed:
            raise ConfigError(
                f"balance: {out_dir} holds a run whose shard {changed[0]} read "
                f"{previous[changed[0]]}, now {current[changed[0]]}: use a new --out"
            )
        current = {**previous, **current}
    fsio.write_json(url, current)


def invalidate_stale_passes(
    out_dir: str,
    match_config: Mapping[str, Any],
    sample_config: Mapping[str, Any],
    passes: Mapping[str, list[str]],
) -> list[str]:
    """Remove the done markers of passes whose configuration changed; returns the stages reset.

    `passes` maps "match" and "sample" to the stage names whose markers depend on them.
    """
    url = fsio.join(out_dir, "_config.json")
    previous = fsio.read_json(url, expect=dict) if fsio.exists(url) else {}
    reset: list[str] = []
    if previous and previous.get("match") != _jsonable(match_config):
        reset = passes["match"] + passes["sample"]
    elif previous and previous.get("sample") != _jsonable(sample_config):
        reset = list(passes["sample"])
    for stage in reset:
        clear_markers(out_dir, stage)
    fsio.write_json(url, {"match": _jsonable(match_config), "sample": _jsonable(sample_config)})
    return reset


def clear_markers(out_dir: str, stage: str) -> None:
    fsio.remove(stats_dir(out_dir, stage))


def _jsonable(config: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(config, sort_keys=True, default=str))
