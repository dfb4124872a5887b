"""model.compile and model.activation_checkpointing change how blocks run, not what they compute:
the phase-1 loss and every gradient equal eager's on a real batch."""

import copy

import pytest
import torch
from torch._inductor import config as inductor_config

from training.config import TrainArgs, from_dict
from training.distributed import DistEnv, set_block_options
from training.objectives import LossConfig, phase1_loss
from training.trainer import Trainer, make_loader

CPU = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def model_and_batch(shard_world):
    args = from_dict(
        TrainArgs,
        {
            "model": {"preset": "tiny", "tokenizer": "minicc_bpe.json", "box_bins": 64},
            "data": {
                "text_shards": shard_world.text_pattern,
                "grounding_shards": shard_world.grounding_pattern,
                "batch_size": 8,
                "grounding_fraction": 0.25,
                "num_workers": 0,
            },
            "schedule": {"steps": 2},
        },
    ).resolve()
    trainer = Trainer(args, CPU)
    batch = next(make_loader(args, trainer.model_cfg, CPU, trainer.tokenizer))
    return trainer.bare_model, batch


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # LocCa's parallel-prediction draws
    loss, _ = phase1_loss(model, batch, LossConfig(sigmoid_backend="local"))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize(
    "compile, checkpointing",
    [
        (False, True),
        # Compiling takes minutes on a shared 2-core box; with checkpointing, it covers both.
        pytest.param(True, True, marks=pytest.mark.slow),
    ],
    ids=["checkpointing", "compile_and_checkpointing"],
)
def test_block_options_give_eager_losses_and_gradients(model_and_batch, compile, checkpointing):
    eager_model, batch = model_and_batch
    eager_loss, eager_grads = loss_and_grads(eager_model, batch)
    model = copy.deepcopy(eager_model)
    set_block_options(model, compile=compile, activation_checkpointing=checkpointing)
    assert [n for n, _ in model.named_parameters()] == [
        n for n, _ in eager_model.named_parameters()
    ]
    # Compile in this process: a pool of compile workers only competes for the two cores.
    # (inductor's own config.patch, not monkeypatch: after monkeypatch's undo of the first
    # parameter, the config module had no `compile_threads` in a full run.)
    with inductor_config.patch(compile_threads=1):
        loss, grads = loss_and_grads(model, batch)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_checkpointing_recomputes_each_block_in_backward(model_and_batch):
    eager_model, batch = model_and_batch
    model = copy.deepcopy(eager_model)
    calls = []
    # A pre-hook: the recomputation stops as soon as the saved tensors are back, before the
    # MLP returns, so a forward hook would not see it.
    model.vision.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    loss_and_grads(model, batch)
    set_block_options(model, compile=False, activation_checkpointing=True)
    loss_and_grads(model, batch)
    assert len(calls) == 1 + 2  # eager once; checkpointed: forward, then again in backward


def test_so400m_checkpoints_activations_by_default():
    from training.config import load_args

    assert load_args("so400m").model.activation_checkpointing
    assert not load_args("b16").model.activation_checkpointing
    assert not load_args("tiny").model.compile
