from curation.dashboard.stage_stats import funnel, merge_extras, merge_records


def record(stage: str, shard: str, started: float, **fields):
    return {
        "stage": stage,
        "shard": shard,
        "rows_in": 10,
        "rows_out": 8,
        "drops": {"x": 2},
        "errors": {},
        "wall_seconds": 1.0,
        "started_at": started,
        "finished_at": started + 1.0,
        **fields,
    }


def test_extras_are_summed_and_a_setting_every_shard_shares_is_kept():
    merged = merge_extras(
        [
            {"kept": 3, "t": 5, "by": {"a": 1}, "format": "warc"},
            {"kept": 4, "t": 5, "by": {"a": 2}, "format": "wat"},
        ]
    )
    assert merged["kept"] == {"sum": 7, "value": None, "shards": 2}
    assert merged["t"] == {"sum": 10, "value": 5, "shards": 2}
    assert merged["by.a"]["sum"] == 3
    assert merged["format"] == {"sum": None, "value": None, "shards": 2}


def test_stages_sort_in_pipeline_order_then_by_start_and_the_funnel_skips_absent_steps():
    stages = merge_records(
        [
            record("custom_filter", "0", 5.0),
            record("download", "0", 9.0),
            record("dedup", "0", 3.0),
            record("dedup_partition", "0", 2.0),
            record("extract", "0", 1.0, extra={"records": 40}),
            record("extract", "1", 1.5, extra={"records": 2}),
        ]
    )
    assert list(stages) == ["extract", "dedup_partition", "dedup", "download", "custom_filter"]
    assert stages["extract"]["rows_in"] == 20 and stages["extract"]["drops"] == {"x": 4}
    assert [(s["label"], s["rows"]) for s in funnel(stages)] == [
        ("WARC records read", 42),
        ("images seen", 20),
        ("candidate pairs", 16),
        ("unique image URLs", 8),
        ("downloaded", 8),
    ]
