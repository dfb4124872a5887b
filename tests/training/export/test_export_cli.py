import shlex

import pytest
import torch

from training.cli import main
from training.run_folder import resolve_checkpoint


def test_ckpt_resolves_from_run_checkpoints_or_step_folder(tiny_run):
    run, _ = tiny_run
    step = run / "checkpoints" / "step_00000007"
    assert resolve_checkpoint(run) == step
    assert resolve_checkpoint(run / "checkpoints") == step
    assert resolve_checkpoint(step) == step


def test_ckpt_that_is_not_a_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        resolve_checkpoint(tmp_path)
    assert (
        main(
            [
                "export",
                "--ckpt",
                str(tmp_path),
                "--format",
                "open_clip",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def test_open_clip_export_prints_scorer_arguments_that_load_the_model(tiny_run, tmp_path, capsys):
    import open_clip

    run, model = tiny_run
    assert (
        main(["export", "--ckpt", str(run), "--format", "open_clip", "--out", str(tmp_path)]) == 0
    )
    line = next(
        text for text in capsys.readouterr().out.splitlines() if text.startswith("curation scorer")
    )
    arguments = shlex.split(line.split(":", 1)[1])
    assert arguments[::2] == ["--model", "--weights", "--model-config"]
    assert arguments[3] == str(tmp_path / "open_clip_model.safetensors")
    theirs, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            theirs.eval().encode_image(images), model.encode_image(images)[0], atol=1e-5, rtol=1e-4
        )


def test_encoder_loads_despite_a_changed_distillation_head_layout(tiny_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from training.run_folder import load_encoder

    run, model = tiny_run
    step = resolve_checkpoint(run)
    weights = load_file(step / "model.safetensors")
    weights["distill_heads.silc.last_layer.weight_v"] = torch.zeros(3)  # an older head layout
    copy = tmp_path / "step"
    copy.mkdir()
    save_file(weights, copy / "model.safetensors")
    (copy / "config.json").write_text((step / "config.json").read_text())
    loaded = load_encoder(copy)
    assert loaded.distill_heads is None
    assert torch.equal(loaded.text.head.weight, model.text.head.weight)
    weights["vision.unknown"] = torch.zeros(1)  # a tower mismatch still fails loudly
    save_file(weights, copy / "model.safetensors")
    with pytest.raises(RuntimeError, match="vision.unknown"):
        load_encoder(copy)


@pytest.mark.parametrize("fmt", ["open_clip", "hf"])
def test_an_average_pooled_encoder_is_refused_by_both_exports(tmp_path, capsys, fmt):
    # SigLIP's layouts (open_clip's timm trunk, transformers' Siglip2) hold the attention-pooling
    # head; a vision.pool=avg encoder has none, so exporting it would load a head it never had.
    from tests.training.export.run_fixture import write_run
    from training.models.config import model_config
    from training.models.siglip import SigLIP2

    write_run(tmp_path / "run", SigLIP2(model_config("tiny", vision={"pool": "avg"})))
    out = tmp_path / "out"
    assert (
        main(["export", "--ckpt", str(tmp_path / "run"), "--format", fmt, "--out", str(out)]) == 2
    )
    assert "vision.pool=map" in capsys.readouterr().err
    assert not out.exists()
