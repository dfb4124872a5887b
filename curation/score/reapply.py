"""Passes that apply a driver-side global decision (a score threshold, a dedup plan) per shard.

Their shard markers record the digest of the decision they applied. When the decision changes
(new threshold, new eval sets), the markers made under the old one are removed, so exactly the
affected shards are rewritten and the others are skipped as usual.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from curation import fsio
from curation.stats import stats_dir

DIGEST_KEY = "decision_digest"


def decision_digest(decision: Any) -> str:
    return hashlib.blake2b(
        json.dumps(decision, sort_keys=True, default=str).encode(), digest_size=8
    ).hexdigest()


def invalidate_other_decisions(out_dir: str, stage: str, digest: str) -> int:
    """Remove `stage` markers whose recorded decision digest is not `digest`; return how many."""
    fs, folder = fsio.filesystem(stats_dir(out_dir, stage))
    if not fs.exists(folder):
        return 0
    removed = 0
    for path in fs.ls(folder, detail=False):
        if not path.endswith(".json"):
            continue
        record = json.loads(fs.cat_file(path))
        if record.get("extra", {}).get(DIGEST_KEY) != digest:
            fs.rm(path)
            removed += 1
    return removed
