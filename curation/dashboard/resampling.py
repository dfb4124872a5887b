"""The "Debias & languages" page: what the debias and langmix stages resampled.

Reads only what those stages write beside their columns: POOL/curation/debias/debias_summary.json
(representation and attribute-concept association before and after, the top concepts) and
POOL/curation/langmix/langmix_summary.json (target and achieved language shares).
"""

from __future__ import annotations

from typing import Any

from curation import fsio
from curation.dashboard.layout import missing
from curation.dashboard.pool import PoolTable
from curation.dashboard.stage_stats import StageStats

SUMMARIES = {"debias": "debias_summary.json", "langmix": "langmix_summary.json"}


def resampling_page(pool: PoolTable, stats: StageStats) -> dict[str, Any]:
    page: dict[str, Any] = {"missing": []}
    for stage, name in SUMMARIES.items():
        url = fsio.join(pool.layout.curation(stage), name)
        if not fsio.exists(url):
            page["missing"].append(missing(stage))
            continue
        page[stage] = fsio.read_json(url, expect=dict)
        page[f"{stage}_stats"] = stats.stage(stage)
    return page
