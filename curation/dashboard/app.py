"""The dashboard's data side: one object per run answering each page's JSON request."""

from __future__ import annotations

from typing import Any

from curation import fsio
from curation.dashboard import crawl, decisions, metaclip, neardup, resampling, score
from curation.dashboard.images import TarImages
from curation.dashboard.layout import RunLayout, missing
from curation.dashboard.pool import PoolTable
from curation.dashboard.stage_stats import PIPELINE_ORDER, StageStats, funnel
from curation.dashboard.training import TrainingLog, training_page


class Dashboard:
    """Each page is a dict of JSON; every page also lists the run's files found unreadable so far
    (`unreadable`: shard, file, cause), whose shards its numbers leave out."""

    def __init__(self, run: str, threads: int | None = None):
        self.layout = RunLayout(run.rstrip("/"))
        self.pool = PoolTable(self.layout, threads)
        self.stats = StageStats(self.layout.root)
        self._training_logs: dict[str, TrainingLog] = {}
        self.images = TarImages(self.pool.tar_url)

    def overview(self) -> dict[str, Any]:
        stages = self.stats.stages
        present = {stage["step"] for stage in stages.values()}
        absent = [step for step in PIPELINE_ORDER if step not in present]
        return {
            "run": self.layout.root,
            "stages": list(stages.values()),
            "funnel": funnel(stages),
            "absent_stages": absent,
            "missing": [] if stages else [missing("stats")],
        }

    def crawl(self) -> dict[str, Any]:
        page = self.pool.memo.get("crawl", lambda: crawl.crawl_page(self.pool, self.stats))
        return page if self.pool.shards else {**page, "missing": [missing("pool")]}

    def metaclip(self) -> dict[str, Any]:
        return metaclip.metaclip_page(self.pool, self.stats)

    def metaclip_search(self, query: str) -> dict[str, Any]:
        return metaclip.search_entry(self.pool, query)

    def score(self) -> dict[str, Any]:
        return score.score_page(self.pool, self.stats)

    def neardup(self) -> dict[str, Any]:
        return neardup.neardup_page(self.pool, self.stats)

    def resampling(self) -> dict[str, Any]:
        return resampling.resampling_page(self.pool, self.stats)

    def training_page(self, run: str | None = None) -> dict[str, Any]:
        names = self.layout.training_runs()
        for name in names:  # one log object per run: each caches its parsed log
            if name not in self._training_logs:
                self._training_logs[name] = TrainingLog(fsio.join(self.layout.root, name))
        return training_page([self._training_logs[name] for name in names], run)

    def decision_index(self) -> decisions.DecisionIndex:
        return self.pool.memo.get("decisions", lambda: decisions.build_index(self.pool))

    def samples(self, decision: str = "all", page: int = 0, size: int = 24) -> dict[str, Any]:
        if not self.pool.shards:
            return {"missing": [missing("pool")], "samples": [], "total": 0, "counts": {}}
        return decisions.sample_page(self.pool, self.decision_index(), decision, page, size)

    def page(self, name: str, *args: Any) -> dict[str, Any]:
        """Page `name` (a method above) with the unreadable files listed."""
        page = getattr(self, name)(*args)
        return {**page, "unreadable": self.pool.unreadable()}

    def image(self, shard: str, key: str) -> tuple[bytes, str]:
        return self.images.image(shard, key)
