import json

from training.metrics_log import MetricsLogger, read_metrics


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_a_run_starting_at_a_checkpoint_drops_the_killed_segments_later_records(tmp_path):
    first = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    for step in (10, 20, 30):
        first.log(step, {"loss": 1.0 / step})
    first.close()  # killed after logging step 30; its last checkpoint was at step 20
    resumed = MetricsLogger(tmp_path, enabled=True, tensorboard=False, start_step=20)
    resumed.log(30, {"loss": 0.5})
    resumed.close()
    assert _steps(tmp_path / "metrics.jsonl") == [10, 20, 30]
    assert read_metrics(tmp_path / "metrics.jsonl")[-1]["loss"] == 0.5


def test_reading_an_old_log_with_a_repeated_segment_keeps_the_resumed_records(tmp_path):
    lines = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 1.0}]
    lines += [{"step": 2, "loss": 2.5}, {"step": 3, "loss": 1.5}, {"step": 4, "loss": 1.2}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [
        (1, 3.0),
        (2, 2.5),
        (3, 1.5),
        (4, 1.2),
    ]


def test_a_remote_run_logs_locally_and_syncs_the_log_and_tensorboard_to_its_url(s3_bucket):
    import s3fs

    run = f"{s3_bucket}/run"
    logger = MetricsLogger(run, enabled=True, tensorboard=True)
    logger.log(1, {"loss": 2.0})
    logger.log(2, {"loss": 1.0})
    assert [r["step"] for r in read_metrics(f"{run}/metrics.jsonl")] == [1, 2]
    logger.close()
    fs = s3fs.S3FileSystem()
    assert any("tfevents" in path for path in fs.find(f"{run}/tensorboard"))
    # A resume on another machine (no local mirror) starts from the run URL's log.
    logger.path.unlink()
    resumed = MetricsLogger(run, enabled=True, tensorboard=False, start_step=1)
    resumed.log(2, {"loss": 0.9})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(f"{run}/metrics.jsonl")] == [
        (1, 2.0),
        (2, 0.9),
    ]
