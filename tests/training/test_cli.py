import pytest
import torch

from training.cli import main
from training.config import ConfigError, TrainArgs, apply_overrides, from_dict, load_args
from training.metrics_log import read_metrics


def test_presets_load_and_overrides_are_typed():
    args = load_args(
        "tiny",
        [
            "optim.lr=1e-3",
            "data.batch_size=64",
            "optim.betas=[0.9, 0.99]",
            "model.overrides={vision.depth: 1}",
        ],
    )
    assert args.optim.lr == 1e-3 and isinstance(args.optim.lr, float)
    assert args.data.batch_size == 64 and args.optim.betas == (0.9, 0.99)
    assert args.model.overrides == {"vision.depth": 1}
    for preset in ("b16", "so400m"):
        assert load_args(preset).model.preset == preset


@pytest.mark.parametrize("preset", ["tiny", "b16", "so400m"])
def test_presets_run_the_three_phase_schedule_in_siglip2_proportions(preset):
    args = load_args(preset, ["data.text_shards=x.tar"]).resolve()
    schedule = args.schedule
    assert (schedule.phase2_start, schedule.phase3_start) == (0.8, 0.9)
    assert args.distills and args.reaches_phase3 and schedule.phase3_distill
    phases = [schedule.phase_at(step) for step in range(schedule.steps)]
    assert phases.count(1) == 0.8 * schedule.steps and phases.count(3) == 0.1 * schedule.steps


def test_unknown_or_mistyped_keys_fail_with_their_dotted_name():
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_args("tiny", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_args("tiny", ["data.batch_size=lots"])
    with pytest.raises(ConfigError, match="no config preset 'huge'"):
        load_args("huge")


def test_grounding_share_must_leave_both_kinds_of_samples():
    args = from_dict(
        TrainArgs,
        apply_overrides(
            {},
            [
                "data.text_shards=x.tar",
                "data.grounding_shards=g.tar",
                "data.batch_size=2",
                "data.grounding_fraction=0.1",
            ],
        ),
    )
    with pytest.raises(ConfigError, match="grounding"):
        args.resolve()
    args.data.batch_size = 32
    assert args.resolve().data.grounding_per_batch == 3


def test_cli_reports_config_errors_without_a_traceback(capsys):
    assert main(["train", "--preset", "tiny", "optim.nope=1"]) == 2
    assert "optim.nope" in capsys.readouterr().err


def test_cli_trains_from_brace_patterns_and_writes_a_checkpoint(shard_world, tmp_path):
    code = main(
        [
            "train",
            "--preset",
            "tiny",
            "--data",
            shard_world.text_pattern,
            "--grounding",
            shard_world.grounding_pattern,
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "2",
            "data.batch_size=8",
            "data.num_workers=0",
            "logging.every=1",
            "logging.tensorboard=false",
            "logging.progress_bar=false",
        ]
    )
    assert code == 0
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step_00000002"


def test_model_vocabulary_follows_a_local_tokenizer_file(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    from training.distributed import DistEnv
    from training.trainer import Trainer

    words = ["<eos>", "<unk>", "red", "blue", "rectangle", "a"]
    hf = HFTokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    hf.pre_tokenizer = Whitespace()
    hf.save(str(tmp_path / "tokenizer.json"))
    args = from_dict(
        TrainArgs,
        apply_overrides(
            {}, ["data.text_shards=x.tar", f"model.tokenizer={tmp_path / 'tokenizer.json'}"]
        ),
    ).resolve()
    trainer = Trainer(args, DistEnv(0, 1, 0, torch.device("cpu")))
    assert trainer.model_cfg.text.vocab_size == trainer.tokenizer.vocab_size < 2000
    assert trainer.tokenizer.encode(["a red rectangle"]).max() < trainer.model_cfg.text.vocab_size


def test_data_pattern_matching_no_file_is_one_line_and_exit_2(tmp_path, capsys):
    pattern = str(tmp_path / "nothing-here" / "*.tar")
    code = main(["train", "--preset", "tiny", "--data", pattern, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and pattern in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
