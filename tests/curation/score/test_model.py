import json

import numpy as np
import pytest
import torch
from planted_pool import tiny_model_config

from curation.score.embedder import ClipEmbedder, plan_actor_pool, shard_inputs
from curation.score.model import (
    ScorerConfigError,
    ScorerSpec,
    _read_weights,
    load_scorer,
    read_weights_metadata,
    save_random_weights,
    weights_are_random,
)

TINY = "tiny-clip"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_random_weights(TINY, str(path), str(tiny_model_config()), seed=3)
    return path


def test_random_weights_are_flagged_and_reload_without_the_config_file(random_weights):
    assert weights_are_random(str(random_weights))
    scorer = load_scorer(ScorerSpec(TINY, str(random_weights)))  # config embedded in metadata
    assert scorer.random_init and scorer.image_size == 64


def test_open_clip_training_checkpoint_with_ddp_prefix_loads_the_same_model(
    random_weights, tmp_path
):
    reference = load_scorer(ScorerSpec(TINY, str(random_weights)))
    state = {f"module.{k}": v for k, v in reference.model.state_dict().items()}
    checkpoint = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": state}, checkpoint)
    loaded = load_scorer(ScorerSpec(TINY, str(checkpoint), str(tiny_model_config())))
    assert not loaded.random_init
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(
            loaded.model.encode_image(images), reference.model.encode_image(images)
        )


def test_exporter_config_beside_the_weights_is_used(random_weights, tmp_path):
    scorer = load_scorer(ScorerSpec(TINY, str(random_weights)))
    folder = tmp_path / "export"
    folder.mkdir()
    torch.save(scorer.model.state_dict(), folder / "open_clip_model.bin")
    config = {
        "model_cfg": json.loads(tiny_model_config().read_text()),
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    embedder = ClipEmbedder(ScorerSpec(TINY, str(folder / "open_clip_model.bin")))
    assert tuple(embedder.preprocess_cfg()["mean"]) == (0.5, 0.5, 0.5)


def test_weights_for_another_architecture_are_refused(random_weights, tmp_path):
    with pytest.raises(ScorerConfigError, match="saved for model 'tiny-clip'"):
        load_scorer(ScorerSpec("ViT-S-32", str(random_weights)))
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"visual.nothing": torch.zeros(1)}}, wrong)
    with pytest.raises(ScorerConfigError, match="do not fit"):
        load_scorer(ScorerSpec(TINY, str(wrong), str(tiny_model_config())))


def test_configs_that_need_the_hub_are_refused(tmp_path):
    config = json.loads(tiny_model_config().read_text())
    config["text_cfg"]["hf_tokenizer_name"] = "google/gemma"
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ScorerConfigError, match="hub"):
        save_random_weights("hub-model", str(tmp_path / "w.safetensors"), str(path))
    with pytest.raises(ScorerConfigError, match="not an open_clip architecture"):
        save_random_weights("no-such-model", str(tmp_path / "w.safetensors"))


def test_embeddings_are_unit_vectors_and_score_is_their_dot_product(random_weights):
    embedder = ClipEmbedder(ScorerSpec(TINY, str(random_weights)))
    pixels = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    images, texts = embedder.embed(pixels, ["a red circle", "a blue square", ""])
    assert images.shape == texts.shape == (3, 64)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert np.allclose(embedder.embed_images(pixels), images, atol=1e-6)


@pytest.mark.parametrize(
    "cpus,gpus,requested,expected",
    [
        (2, 0, None, (1, 1, 0, 1)),  # the 2-core box: one scorer, one decoder
        (16, 0, None, (2, 4, 0, 8)),
        (16, 0, 8, (3, 4, 0, 4)),  # asked for too many: one CPU must stay free for decoding
        (32, 4, None, (4, 1, 1, 28)),
        (8, 2, 1, (1, 1, 1, 7)),
    ],
)
def test_actor_pool_always_leaves_cpus_for_decoding(cpus, gpus, requested, expected):
    plan = plan_actor_pool(cpus, gpus, requested)
    assert (plan.actors, plan.cpus_per_actor, plan.gpus_per_actor, plan.decode_cpus) == expected
    assert plan.actors * plan.cpus_per_actor < cpus


@pytest.mark.parametrize("cpus,requested", [(2, None), (16, None), (16, 8), (7, 2)])
def test_cpu_actors_run_their_model_on_every_core_between_them(cpus, requested):
    plan = plan_actor_pool(cpus, 0, requested)
    assert plan.threads_per_actor >= plan.cpus_per_actor
    assert plan.actors * plan.threads_per_actor == cpus - cpus % plan.actors


def test_gpu_actors_keep_one_thread():
    assert plan_actor_pool(32, 4).threads_per_actor == 1


def test_actor_pool_refuses_a_single_cpu():
    with pytest.raises(ValueError, match="at least 2 CPUs"):
        plan_actor_pool(1, 0)


def test_shard_inputs_from_the_config_equal_what_the_loaded_model_describes(random_weights):
    spec = ScorerSpec(TINY, str(random_weights))
    described = ClipEmbedder(spec).describe()
    assert shard_inputs(spec) == (described["preprocess_cfg"], described["embed_dim"])
    # The driver reads only the safetensors header: the same metadata as the whole file's.
    assert read_weights_metadata(str(random_weights)) == _read_weights(str(random_weights))[1]


def test_a_broken_safetensors_header_is_refused_naming_the_file(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((40).to_bytes(8, "little") + b"{not json")
    with pytest.raises(ScorerConfigError, match="broken.safetensors: unreadable safetensors"):
        read_weights_metadata(str(broken))
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(ScorerConfigError, match="huge.safetensors: safetensors header of"):
        read_weights_metadata(str(huge))
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01")
    with pytest.raises(ScorerConfigError, match="too short"):
        weights_are_random(str(short))
