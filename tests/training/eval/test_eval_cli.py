import json

import torch
from eval_set_writer import write_classification_set, write_segmentation_set

from tests.training.export.run_fixture import write_run
from training.cli import main
from training.eval.run import flatten_metrics, format_table
from training.models.config import model_config
from training.models.siglip import SigLIP2


def make_run_and_data(tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    write_run(run, SigLIP2(model_config("tiny", distill=None)), step=12)
    data = tmp_path / "eval"
    write_segmentation_set(data / "segmentation")
    write_classification_set(data / "zeroshot")
    return run, data


def test_eval_cli_writes_json_and_prints_a_table(tmp_path, capsys):
    run, data = make_run_and_data(tmp_path)
    assert main(["eval", "--ckpt", str(run), "--tasks", "dense,knn", "--data", str(data)]) == 0
    report = json.loads((run / "eval" / "step_00000012.json").read_text())
    assert report["step"] == 12 and set(report["results"]) == {"dense", "knn"}
    assert report["results"]["dense"]["dataset"] == f"{data}/segmentation"
    assert report["results"]["knn"]["dataset"] == f"{data}/zeroshot"
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "top1@k10" in printed and "step_00000012.json" in printed


def test_a_missing_set_is_reported_without_stopping_the_other_tasks(tmp_path, capsys):
    run, data = make_run_and_data(tmp_path)
    code = main(
        [
            "eval",
            "--ckpt",
            str(run),
            "--tasks",
            "retrieval,knn",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1
    results = json.loads((tmp_path / "out" / "step_00000012.json").read_text())["results"]
    assert "error" in results["retrieval"] and f"{data}/retrieval" in results["retrieval"]["error"]
    assert "top1@k1" in results["knn"]


def test_set_override_and_bad_arguments(tmp_path, capsys):
    run, data = make_run_and_data(tmp_path)
    assert (
        main(
            [
                "eval",
                "--ckpt",
                str(run),
                "--tasks",
                "knn",
                "--data",
                str(tmp_path / "none"),
                "--set",
                f"knn={data}/zeroshot",
            ]
        )
        == 0
    )
    assert main(["eval", "--ckpt", str(run), "--tasks", "nope"]) == 2
    assert main(["eval", "--ckpt", str(run), "--set", "knn"]) == 2
    assert "unknown eval tasks ['nope']" in capsys.readouterr().err


def test_flatten_metrics_keeps_numbers_only():
    results = {
        "knn": {"top1@k1": 0.5, "memory_split": "train", "samples": 6, "seconds": 1.2},
        "retrieval": {"error": "FileNotFoundError: x", "dataset": "d"},
    }
    assert flatten_metrics(results) == {"eval/knn/top1@k1": 0.5, "eval/knn/samples": 6.0}
    table = format_table(results)
    assert "knn" in table and "error" in table
