"""import-siglip2 of our own export: the imported checkpoint keeps the exported tokenizer's ids
(its box and task tokens are not added a second time), evaluates, and exports again."""

import json
import sys
from pathlib import Path

import torch

from tests.training.export.run_fixture import write_run
from training.cli import main
from training.config import load_args, to_dict
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.run_folder import tokenizer_for_checkpoint
from training.trainer import make_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from eval_set_writer import write_classification_set  # noqa: E402

TEXTS = ["a red square", "Two  BLUE squares, on grass"]


def tiny_preset_run(run: Path) -> tuple[SigLIP2, object]:
    """A run of the tiny preset as the trainer writes it: the shipped 1.5k BPE, 64 box bins."""
    args = load_args("tiny")
    tokenizer = make_tokenizer(args.model.tokenizer, args.model.box_bins)
    torch.manual_seed(2)
    model = SigLIP2(
        model_config("tiny", distill=None, **{"text.vocab_size": tokenizer.vocab_size})
    ).eval()
    step = write_run(run, model)
    config = json.loads((step / "config.json").read_text())
    (step / "config.json").write_text(json.dumps({**config, "train": to_dict(args)}))
    return model, tokenizer


def test_an_imported_export_evaluates_and_exports_again_with_the_same_ids(tmp_path):
    model, tokenizer = tiny_preset_run(tmp_path / "run")
    hf = tmp_path / "hf"
    assert (
        main(["export", "--ckpt", str(tmp_path / "run"), "--format", "hf", "--out", str(hf)]) == 0
    )
    assert main(["import-siglip2", "--hf", str(hf), "--out", str(tmp_path / "imported")]) == 0
    step = tmp_path / "imported" / "checkpoints" / "step_00000000"
    imported = tokenizer_for_checkpoint(step, model.cfg.text.context_length)
    assert imported.vocab_size == tokenizer.vocab_size == model.cfg.text.vocab_size
    assert imported.box_bins == 64
    assert imported.box_tokens((0.1, 0.2, 0.3, 0.4)) == tokenizer.box_tokens((0.1, 0.2, 0.3, 0.4))
    assert imported.task_token("aref") == tokenizer.task_token("aref")
    length = model.cfg.text.context_length
    assert torch.equal(imported.encode(TEXTS, length), tokenizer.encode(TEXTS, length))

    data = tmp_path / "eval"
    write_classification_set(data / "zeroshot")
    assert (
        main(
            [
                "eval",
                "--ckpt",
                str(tmp_path / "imported"),
                "--tasks",
                "zeroshot,knn",
                "--data",
                str(data),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "imported" / "eval" / "step_00000000.json").read_text())
    assert "top1" in report["results"]["zeroshot"]

    for fmt in ("hf", "open_clip"):
        out = tmp_path / f"again-{fmt}"
        assert main(["export", "--ckpt", str(step), "--format", fmt, "--out", str(out)]) == 0
        first = json.loads((hf / "tokenizer.json").read_text())
        again = json.loads((out / "tokenizer.json").read_text())
        assert again["added_tokens"] == first["added_tokens"]
        assert again["normalizer"] == first["normalizer"]
